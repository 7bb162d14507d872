"""Scoring a localizer against a planted ground truth S (issue 14, §2).

A planted model learned the forget people's facts only through a known component set S (a
`MaskSelection`, see `mechunlearn.models.planted`). Any localizer's output, read at its own
granularity — scalar ``entries``, MLP ``neurons``, whole ``tensors`` or ``layers`` — is scored
against S coarsened to that granularity:

* ``auroc``: the probability that a unit of S outscores a unit outside S, ties counting one
  half (the Mann–Whitney U statistic divided by n_pos·n_neg; Hanley & McNeil 1982).
* ``precision_at_s`` / ``recall_at_s``: of the |S| top-scored units, the share that lie in S,
  and the share of S they cover (equal to each other when exactly |S| units are taken).

The random localizer reads AUROC 0.5 in expectation and S itself 1.0 (both tested).
"""

from __future__ import annotations

import re
from typing import Hashable, Mapping

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mechunlearn.core.selection import MaskSelection

GRANULARITIES = ("entries", "neurons", "tensors", "layers")

_LAYER = re.compile(r"^blocks\.(\d+)\.")


def _layer_of(name: str) -> int | None:
    m = _LAYER.match(name)
    return int(m.group(1)) if m else None


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for boolean ``labels`` (average ranks for ties)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=bool).reshape(-1)
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in size: {scores.shape} vs {labels.shape}")
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUROC needs at least one unit inside and one outside the ground truth")
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def precision_recall_at_k(scores: np.ndarray, labels: np.ndarray, k: int | None = None) -> tuple[float, float]:
    """Precision and recall of the ``k`` top-scored units (default k = number of positives;
    ties at the threshold broken by position, as `MaskSelection.top` does)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=bool).reshape(-1)
    n_pos = int(labels.sum())
    k = n_pos if k is None else k
    if k <= 0:
        raise ValueError("precision at k needs k >= 1")
    top = np.argsort(-scores, kind="stable")[:k]
    hits = int(labels[top].sum())
    return hits / k, hits / max(n_pos, 1)


def truth_units(truth: MaskSelection, granularity: str) -> dict[Hashable, bool]:
    """S coarsened to ``granularity``: every unit of the scored weights, True where S touches it.

    ``neurons`` are ``(layer, index)`` of the MLP hidden units (a neuron is in S when any of its
    W_in column, b_in entry or W_out row is); ``tensors`` are weight names; ``layers`` block indices.
    ``entries`` are ``(name, flat index)``."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    units: dict[Hashable, bool] = {}
    for name, mask in truth.masks.items():
        if granularity == "entries":
            flat = mask.reshape(-1).tolist()
            units.update({(name, i): v for i, v in enumerate(flat)})
        elif granularity == "tensors":
            units[name] = units.get(name, False) or bool(mask.any())
        elif granularity == "layers":
            layer = _layer_of(name)
            if layer is not None:
                units[layer] = units.get(layer, False) or bool(mask.any())
        else:
            per = _neuron_reduce(name, mask.float())
            if per is not None:
                layer = _layer_of(name)
                for i, v in enumerate((per > 0).tolist()):
                    units[(layer, i)] = units.get((layer, i), False) or v
    return units


def _neuron_reduce(name: str, values: Tensor) -> Tensor | None:
    """Per-hidden-unit sum of |values| for an MLP weight (W_in columns, b_in, W_out rows)."""
    if name.endswith("mlp.W_in"):
        return values.abs().sum(0)
    if name.endswith("mlp.b_in"):
        return values.abs()
    if name.endswith("mlp.W_out"):
        return values.abs().sum(1)
    return None


def units_from_weight_scores(scores: Mapping[str, Tensor], granularity: str) -> dict[Hashable, float]:
    """Per-weight scores (a `MaskSelection`'s ``scores`` or any name → tensor map) reduced to
    units: entries as they are, neurons / tensors / layers by the sum of |score| (tensors and
    layers by the mean, so large tensors are not favoured by size alone)."""
    out: dict[Hashable, float] = {}
    for name, s in scores.items():
        s = s.detach().float().cpu()
        if granularity == "entries":
            out.update({(name, i): v for i, v in enumerate(s.reshape(-1).tolist())})
        elif granularity == "tensors":
            out[name] = float(s.abs().mean())
        elif granularity == "layers":
            layer = _layer_of(name)
            if layer is not None:
                out.setdefault(layer, 0.0)
                out[layer] += float(s.abs().mean())
        elif granularity == "neurons":
            per = _neuron_reduce(name, s)
            if per is not None:
                layer = _layer_of(name)
                for i, v in enumerate(per.tolist()):
                    out[(layer, i)] = out.get((layer, i), 0.0) + v
        else:
            raise ValueError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    return out


def score_localizer(unit_scores: Mapping[Hashable, float], truth: MaskSelection, granularity: str, *, name: str = "localizer") -> dict:
    """AUROC and precision / recall at |S| of ``unit_scores`` (unit → score) against ``truth``.

    Units of S that the localizer did not score count as scored lowest (a localizer that only
    looks at some weights pays for what it did not look at)."""
    truth_map = truth_units(truth, granularity)
    unknown = [u for u in unit_scores if u not in truth_map]
    if unknown:
        raise ValueError(f"{name}: units not among the ground truth's weights: {unknown[:3]}")
    keys = list(truth_map)
    floor = min(unit_scores.values(), default=0.0) - 1.0
    s = np.array([unit_scores.get(k, floor) for k in keys], dtype=np.float64)
    y = np.array([truth_map[k] for k in keys], dtype=bool)
    p, r = precision_recall_at_k(s, y)
    return {"localizer": name, "granularity": granularity, "auroc": auroc(s, y), "precision_at_s": p, "recall_at_s": r,
            "n_units": len(keys), "n_truth": int(y.sum())}


def random_scores(truth: MaskSelection, granularity: str, *, seed: int = 0) -> dict[Hashable, float]:
    """The random localizer: i.i.d. uniform scores per unit (AUROC 0.5 in expectation)."""
    keys = list(truth_units(truth, granularity))
    gen = np.random.default_rng(seed)
    return dict(zip(keys, gen.random(len(keys)).tolist()))


def oracle_scores(truth: MaskSelection, granularity: str) -> dict[Hashable, float]:
    """The oracle localizer: 1 on S, 0 elsewhere (AUROC 1)."""
    return {k: float(v) for k, v in truth_units(truth, granularity).items()}


def score_table(localizers: Mapping[str, tuple[str, Mapping[Hashable, float]]], truth: MaskSelection) -> pd.DataFrame:
    """One row per localizer (name → (granularity, unit scores)), with the random and oracle
    localizers added at each granularity used."""
    rows = [score_localizer(scores, truth, gran, name=name) for name, (gran, scores) in localizers.items()]
    for gran in sorted({g for g, _ in localizers.values()}):
        rows.append(score_localizer(random_scores(truth, gran), truth, gran, name=f"random ({gran})"))
        rows.append(score_localizer(oracle_scores(truth, gran), truth, gran, name=f"oracle ({gran})"))
    return pd.DataFrame(rows)
