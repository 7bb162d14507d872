"""Scoring a localizer against a planted ground truth S (issue 14, §2).

A planted model learned the forget people's facts only through a known component set S (a
`MaskSelection`, see `mechunlearn.models.planted`). Any localizer's output, read at its own
granularity, is scored against S coarsened to that granularity:

| granularity | unit                               | a unit is in S when S touches any of its entries |
| ----------- | ---------------------------------- | ------------------------------------------------ |
| ``entries`` | one scalar weight                  | it is in S                                       |
| ``neurons`` | an MLP hidden unit ``(layer, i)``  | its W_in column, b_in entry or W_out row         |
| ``heads``   | an attention head ``(layer, h)``   | its W_Q/W_K/W_V/W_O slices or b_Q/b_K/b_V entries |
| ``tensors`` | a weight tensor                    | any entry                                        |
| ``modules`` | ``(layer, attn | mlp)``            | any entry of the module's weights                |
| ``layers``  | a block                            | any entry of the block's weights                 |

The units are those of the block weights without the layer norms (the ``no_embed`` family, where
every plant type lives). Scores are flat numpy arrays aligned with `GroundTruth.labels`: one value
per unit, never a Python object per weight (bios-tiny's 3.1 M entries score in well under a second).

* ``auroc``: the probability that a unit of S outscores a unit outside S, ties counting one
  half (the Mann–Whitney U statistic divided by n_pos·n_neg; Hanley & McNeil 1982).
* ``precision_at_s`` / ``recall_at_s``: of the |S| top-scored units, the share that lie in S,
  and the share of S they cover (equal when exactly |S| units are taken).

Units a localizer did not score rank below every scored unit (a localizer that only looks at
some weights pays for what it did not look at). Where S covers every unit of a granularity (a
sparse plant at ``layers``) AUROC is undefined and the row says so (``auroc`` NaN, ``note``).
The random localizer reads AUROC 0.5 in expectation and S itself 1.0 (both tested).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import rankdata
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.selection import MaskSelection, Selection
from mechunlearn.core.site import Site

if TYPE_CHECKING:
    from mechunlearn.core.edit import DeltaEdit
    from mechunlearn.core.result import Result
    from mechunlearn.models.model import Model
    from mechunlearn.unlearn import UnlearnConfig
    from mechunlearn.verify.card import CardConfig
    from mechunlearn.world.target import Target

GRANULARITIES = ("entries", "neurons", "heads", "tensors", "modules", "layers")
"""Finest first: a localizer's output can be coarsened to any granularity after its own."""

_LAYER = re.compile(r"^blocks\.(\d+)\.(attn|mlp)\.")
_HEAD_WEIGHTS = ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V")


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
    ranks = rankdata(scores, method="average")
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


@dataclass(frozen=True)
class GroundTruth:
    """S over every block weight of a model (``no_embed``: blocks without norms), with the unit
    layout of each granularity. Build it with `GroundTruth.of`."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    masks: Mapping[str, Tensor]
    n_layers: int
    d_mlp: int
    n_heads: int

    @classmethod
    def of(cls, model: "Model", truth: MaskSelection) -> "GroundTruth":
        """S (``truth``: masks over some of ``model``'s weights) extended by False to every block weight."""
        names = tuple(model.weight_names("no_embed"))
        outside = sorted(set(truth.masks) - set(names))
        if outside:
            raise ValueError(f"the ground truth names weights that are not block weights of {model.model_id}: {outside[:3]}")
        shapes = tuple(tuple(model.weight(n).shape) for n in names)
        masks = {n: truth.masks[n].cpu() if n in truth.masks else torch.zeros(s, dtype=torch.bool) for n, s in zip(names, shapes)}
        for n, s in zip(names, shapes):
            if tuple(masks[n].shape) != s:
                raise ValueError(f"the ground truth's mask of {n} has shape {tuple(masks[n].shape)}, the weight {s}")
        cfg = model.bridge.cfg
        return cls(names, shapes, masks, cfg.n_layers, cfg.d_mlp, cfg.n_heads)

    def __len__(self) -> int:
        """|S| in entries."""
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def n_units(self, granularity: str) -> int:
        return {"entries": sum(int(np.prod(s)) for s in self.shapes), "neurons": self.n_layers * self.d_mlp,
                "heads": self.n_layers * self.n_heads, "tensors": len(self.names), "modules": 2 * self.n_layers,
                "layers": self.n_layers}[_check(granularity)]

    def labels(self, granularity: str) -> np.ndarray:
        """S at ``granularity``: one bool per unit."""
        return self.reduce({n: m.float() for n, m in self.masks.items()}, granularity) > 0

    def reduce(self, scores: Mapping[str, Tensor], granularity: str) -> np.ndarray:
        """Per-weight scores (name → tensor shaped like the weight) as one score per unit: entries
        as they are; neurons and heads by the sum of |score| over the unit's entries; tensors,
        modules and layers by the mean |score| over their entries (so size alone does not rank a
        tensor first). Weights outside the block weights are ignored; units of weights without
        scores are NaN (see `unit_scores`)."""
        _check(granularity)
        known = [n for n in self.names if n in scores]
        for n in known:
            if tuple(scores[n].shape) != self.shapes[self.names.index(n)]:
                raise ValueError(f"scores of {n} have shape {tuple(scores[n].shape)}, the weight {self.shapes[self.names.index(n)]}")
        parts = [scores[n].detach().float().cpu().reshape(-1).numpy() if n in known else np.full(int(np.prod(shape)), np.nan)
                 for n, shape in zip(self.names, self.shapes)]
        flat = np.concatenate(parts)
        if granularity == "entries":
            return flat
        # Every entry's unit (`_unit_members`, the one description of the layout); entries of no
        # unit at this granularity carry the index n_units and are dropped.
        n, members, scored = self.n_units(granularity), _unit_members(self, granularity), ~np.isnan(flat)
        total = np.bincount(members, weights=np.where(scored, np.abs(flat), 0.0), minlength=n + 1)[:n]
        has = np.bincount(members, weights=scored, minlength=n + 1)[:n] > 0
        if granularity in ("tensors", "modules", "layers"):
            total = total / np.bincount(members, minlength=n + 1)[:n]
        return np.where(has, total, np.nan)

    def site_units(self, sites: Selection, granularity: str) -> np.ndarray:
        """A `Selection`'s scores as unit scores (several sites on one unit: the best). A site
        coarser than ``granularity`` (a whole tensor scored at ``neurons``) raises."""
        out = np.full(self.n_units(granularity), np.nan)
        for site, score in zip(sites.sites, sites.scores):
            i = self.site_unit(site, granularity)
            out[i] = score if np.isnan(out[i]) else max(out[i], score)
        return out

    def site_unit(self, site: Site | str, granularity: str) -> int:
        """The index of the unit at ``granularity`` that holds ``site``."""
        site = Site.parse(site) if isinstance(site, str) else site
        layer = site.layer
        if site.kind != "param" and not (site.kind == "hook" and layer is not None):
            raise ValueError(f"{site}: only weight and block-hook sites map onto planted units")
        if layer is None or not 0 <= layer < self.n_layers:
            raise ValueError(f"{site} is not in a block of this model")
        if granularity == "layers":
            return layer
        module = site.module
        if granularity == "modules":
            if module not in ("attn", "mlp"):
                raise ValueError(f"{site} is not an attention or MLP site; score it at 'layers'")
            return 2 * layer + (module == "mlp")
        if granularity == "tensors" and site.kind == "param" and site.name in self.names:
            return self.names.index(site.name)
        leaf = site.name.rsplit(".", 1)[-1]
        if granularity == "neurons" and len(site.index) == 1 and (leaf in ("W_out", "b_in", "hook_post", "hook_pre") and module == "mlp"):
            return layer * self.d_mlp + site.index[0]
        if granularity == "heads" and len(site.index) >= 1 and module == "attn" and (leaf in _HEAD_WEIGHTS or leaf in ("hook_z", "hook_result")):
            return layer * self.n_heads + site.index[0]
        raise ValueError(f"{site} cannot be read at granularity {granularity!r}; score it at a coarser one")


def _check(granularity: str) -> str:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    return granularity


def _module_of(name: str) -> tuple[int, str]:
    m = _LAYER.match(name)
    if m is None:
        raise ValueError(f"{name} is not an attention or MLP weight of a block")
    return int(m.group(1)), m.group(2)


def unit_scores(output, truth: GroundTruth, granularity: str) -> np.ndarray:
    """A localizer's output as one score per unit at ``granularity``: a `MaskSelection` (its
    scores), a name → tensor map, a `Selection` of sites, a `pd.Series` indexed by layer, or a
    numpy array already aligned with the units. NaN marks units the localizer did not score."""
    if isinstance(output, MaskSelection):
        return truth.reduce(output.scores, granularity)
    if isinstance(output, Selection):
        return truth.site_units(output, granularity)
    if isinstance(output, pd.Series):
        if granularity != "layers":
            raise ValueError("a per-layer Series scores at granularity 'layers'")
        out = np.full(truth.n_layers, np.nan)
        out[np.asarray(output.index, dtype=int)] = output.to_numpy(dtype=float)
        return out
    if isinstance(output, np.ndarray):
        if output.shape != (truth.n_units(granularity),):
            raise ValueError(f"{output.shape[0] if output.ndim else 0} scores for {truth.n_units(granularity)} units at {granularity!r}")
        return output.astype(np.float64)
    if isinstance(output, Mapping):
        return truth.reduce(output, granularity)
    raise TypeError(f"cannot read a {type(output).__name__} as unit scores; give a MaskSelection, Selection, Series or array")


def score_localizer(scores: np.ndarray, truth: GroundTruth, granularity: str, *, name: str = "localizer") -> dict:
    """AUROC and precision / recall at |S| of unit ``scores`` (see `unit_scores`) against ``truth``."""
    labels = truth.labels(granularity)
    s = unit_scores(scores, truth, granularity)
    scored = ~np.isnan(s)
    if not scored.any():
        raise ValueError(f"{name}: no unit scored at granularity {granularity!r}")
    s = np.where(scored, s, np.nanmin(s) - 1.0)
    row = {"localizer": name, "granularity": granularity, "auroc": np.nan, "precision_at_s": np.nan, "recall_at_s": np.nan,
           "n_units": int(labels.size), "n_truth": int(labels.sum()), "n_scored": int(scored.sum()), "note": ""}
    if labels.all() or not labels.any():
        row["note"] = f"S covers {'every' if labels.all() else 'no'} unit at this granularity"
        return row
    row["auroc"] = auroc(s, labels)
    row["precision_at_s"], row["recall_at_s"] = precision_recall_at_k(s, labels)
    return row


def random_scores(truth: GroundTruth, granularity: str, *, seed: int = 0) -> np.ndarray:
    """The random localizer: i.i.d. uniform scores per unit (AUROC 0.5 in expectation)."""
    return np.random.default_rng(seed).random(truth.n_units(granularity))


def oracle_scores(truth: GroundTruth, granularity: str) -> np.ndarray:
    """The oracle localizer: 1 on S, 0 elsewhere (AUROC 1)."""
    return truth.labels(granularity).astype(np.float64)


def coarser(granularity: str) -> tuple[str, ...]:
    """``granularity`` and every coarser one, finest first."""
    return GRANULARITIES[GRANULARITIES.index(_check(granularity)):]


def score_table(outputs: Mapping[str, tuple[str, object]], truth: GroundTruth, *, all_coarser: bool = True, random_seeds: int = 20) -> pd.DataFrame:
    """One row per localizer (name → (its granularity, its output)) and granularity — its own and,
    with ``all_coarser``, every coarser one (``own`` marks the localizer's own) — with the oracle and the random localizer at each
    granularity used (random: the mean over ``random_seeds`` draws, 50 times as many below 10,000
    units, their sd in ``auroc_sd``; at four layers one draw's AUROC is anywhere in [0, 1])."""
    rows, used = [], []
    for name, (gran, output) in outputs.items():
        for g in coarser(gran) if all_coarser else (gran,):
            if g == gran or not isinstance(output, (np.ndarray, pd.Series)):
                try:
                    rows.append({**score_localizer(output, truth, g, name=name), "own": g == gran})
                except ValueError:
                    if g == gran:
                        raise
                    continue
                used.append(g)
    for g in dict.fromkeys(GRANULARITIES):
        if g in used:
            # Few units (one planted layer of four) make one draw's AUROC anywhere in [0, 1]:
            # there, 50 times the draws, so the mean's error is a few hundredths.
            n_draws = random_seeds if truth.n_units(g) > 10_000 else 50 * random_seeds
            row = score_localizer(random_scores(truth, g, seed=0), truth, g, name="random")
            labels = truth.labels(g)
            if not row["note"]:
                draws = np.array([[auroc(s, labels), *precision_recall_at_k(s, labels)] for s in (random_scores(truth, g, seed=i) for i in range(n_draws))])
                row.update(auroc=draws[:, 0].mean(), precision_at_s=draws[:, 1].mean(), recall_at_s=draws[:, 2].mean(), auroc_sd=draws[:, 0].std(ddof=1))
            rows.append({**row, "own": True})
            rows.append({**score_localizer(oracle_scores(truth, g), truth, g, name="oracle"), "own": True})
    return pd.DataFrame(rows)


def top_entries(output, truth: GroundTruth, granularity: str, k: int | None = None) -> MaskSelection:
    """A localizer's top pick of ``k`` entries (default |S|) as a trainable mask over the block
    weights: its units ranked by score, each unit contributing all its entries, the last unit cut
    by position so the mask holds exactly ``k`` entries (unscored units rank last, in order)."""
    k = len(truth) if k is None else k
    s = unit_scores(output, truth, granularity)
    s = np.where(np.isnan(s), -np.inf, s)
    order = np.argsort(-s, kind="stable")
    if granularity == "entries":
        flat = torch.zeros(s.size, dtype=torch.bool)
        flat[torch.from_numpy(order[:k].copy())] = True
    else:
        members = _unit_members(truth, granularity)
        rank = np.empty(s.size + 1, dtype=np.int64)
        rank[order] = np.arange(s.size)
        rank[s.size] = s.size  # entries of no unit at this granularity rank last
        entry_rank = rank[members]
        # Entries ordered by their unit's rank, then by position: the first k.
        pick = np.lexsort((np.arange(entry_rank.size), entry_rank))[:k]
        flat = torch.zeros(entry_rank.size, dtype=torch.bool)
        flat[torch.from_numpy(pick)] = True
    masks, start = {}, 0
    for n, shape in zip(truth.names, truth.shapes):
        size = int(np.prod(shape))
        masks[n] = flat[start : start + size].reshape(shape).clone()
        start += size
    return MaskSelection({n: m.float() for n, m in masks.items()}, masks, {"k": k, "granularity": granularity})


def _unit_members(truth: GroundTruth, granularity: str) -> np.ndarray:
    """For every entry (flat, in `GroundTruth.names` order) the index of its unit at
    ``granularity``; entries that belong to no unit there (a layer's b_O at ``heads``) get the
    index one past the last unit, so they rank last."""
    n_units = truth.n_units(granularity)
    parts = []
    for i, (n, shape) in enumerate(zip(truth.names, truth.shapes)):
        layer, module = _module_of(n)
        leaf = n.rsplit(".", 1)[-1]
        if granularity == "tensors":
            idx = torch.full(shape, i)
        elif granularity == "modules":
            idx = torch.full(shape, 2 * layer + (module == "mlp"))
        elif granularity == "layers":
            idx = torch.full(shape, layer)
        elif granularity == "neurons" and module == "mlp" and leaf in ("W_in", "b_in", "W_out"):
            unit = torch.arange(truth.d_mlp) + layer * truth.d_mlp
            idx = {"W_in": lambda: unit.expand(shape), "b_in": lambda: unit, "W_out": lambda: unit[:, None].expand(shape)}[leaf]()
        elif granularity == "heads" and module == "attn" and leaf in _HEAD_WEIGHTS:
            unit = torch.arange(truth.n_heads) + layer * truth.n_heads
            idx = unit.view(-1, *([1] * (len(shape) - 1))).expand(shape)
        else:
            idx = torch.full(shape, n_units)
        parts.append(idx.reshape(-1))
    return torch.cat(parts).numpy()


# --------------------------------------------------------------------------- what localisation buys


def restricted_configs() -> "dict[str, UnlearnConfig]":
    """The loop's settings per loss for `restricted_unlearning`: the demo's early stop (forget exact
    match ≤ 0.08 on a seeded 300, checked every 5 steps) and learning rates, 150 steps at most."""
    from mechunlearn.unlearn import UnlearnConfig

    stop = dict(stop_forget_em=0.08, stop_every=5, stop_items=300)
    return {"ga": UnlearnConfig(loss="ga", steps=150, lr=1e-4, **stop),
            "graddiff": UnlearnConfig(loss="graddiff", loss_options={"retain_weight": 5.0}, steps=150, lr=3e-4, **stop),
            "npo": UnlearnConfig(loss="npo", steps=150, lr=1e-4, **stop)}


def restricted_unlearning(
    model: "Model",
    target: "Target",
    truth: GroundTruth,
    masks: Mapping[str, MaskSelection | None],
    *,
    losses: Sequence[str] = ("ga", "graddiff", "npo"),
    configs: "Mapping[str, UnlearnConfig] | None" = None,
    oracle: "Model | None" = None,
    verify_target: "Target | None" = None,
    card: "CardConfig | None" = None,
    progress: bool = True,
) -> tuple[pd.DataFrame, "dict[str, DeltaEdit]", "Result | None"]:
    """Unlearn with each loss restricted to each mask (``None``: no restriction) and judge every
    edit against the exact-unlearning ``oracle`` (issue 14, §3).

    ``configs`` maps a loss to the loop's settings, the same for every selection so that only the
    restriction differs (default `restricted_configs`). The table has one row per (loss, selection): mask size, the share of
    the mask inside S (``in_s``), steps and seconds; with ``oracle`` and ``card`` also the card's
    summary (forget / retain exact match, probes, relearning …) and the verdict against the oracle
    (`mechunlearn.verify.verdict`), all edits scored in one card so the references are scored once.
    Returns the table, the edits (by role ``loss:selection``; the model is left unedited) and the card."""
    from mechunlearn.unlearn import unlearn
    from mechunlearn.verify.card import card_summary, evaluation_card
    from mechunlearn.verify.verdict import verdicts

    configs = dict(restricted_configs() if configs is None else configs)
    missing = [l for l in losses if l not in configs]
    if missing:
        raise ValueError(f"no loop settings for losses {missing}; configs has {sorted(configs)}")
    rows, edits = [], {}
    runs = [(loss, name) for loss in losses for name in masks]
    for loss, name in tqdm(runs, desc="restricted unlearning", disable=not progress):
        mask = masks[name]
        config = configs[loss]
        start = time.perf_counter()
        edit = unlearn(model, target, config, mask=mask)
        role = f"{loss}:{name}"
        edits[role] = edit
        size = len(mask) if mask is not None else sum(int(np.prod(s)) for s in truth.shapes)
        inside = sum(int((mask.masks[n].cpu() & truth.masks[n]).sum()) for n in mask.names if n in truth.masks) if mask is not None else len(truth)
        rows.append({"role": role, "loss": loss, "selection": name, "entries": size, "in_s": inside / size,
                     "steps": edit.meta.get("steps"), "seconds": time.perf_counter() - start})
    table = pd.DataFrame(rows)
    if oracle is None or card is None:
        return table, edits, None
    result = evaluation_card({role: (model, edit) for role, edit in edits.items()}, model, oracle, verify_target or target, card)
    summary = card_summary(result)
    judged = verdicts(summary).set_index("model")
    table = table.join(summary, on="role").join(judged[["verdict", "failed", "evidence"]], on="role")
    return table, edits, result
