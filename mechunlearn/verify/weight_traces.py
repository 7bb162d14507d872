"""Intrinsic parametric traces of an edit: how much, where, and in how many directions the
weights moved, and how the activations moved on forget vs retain inputs.

Per weight (and aggregated per layer × module, ``weight="all"``):

| metric             | definition                                                              |
| ------------------ | ----------------------------------------------------------------------- |
| ``rel_frobenius``  | ‖Δθ‖_F / ‖θ‖_F                                                          |
| ``delta_frobenius``| ‖Δθ‖_F                                                                  |
| ``delta_density``  | share of entries with Δθ ≠ 0                                            |
| ``mask_density``   | share of entries the edit's mask allows to change (only with a mask)    |
| ``effective_rank`` | exp(entropy of σ/Σσ) of ΔW (Roy & Vetterli 2007; 0 for ΔW = 0)           |
| ``stable_rank``    | ‖ΔW‖_F² / σ_max²                                                        |
| ``singular_value`` | the top ``n_singular`` singular values of ΔW, column ``rank`` = 0, 1, … |

Matrices are read in their TransformerLens layout; head-split attention weights are flattened
to one matrix (``W_Q/W_K/W_V`` ``[h, d_model, d_head]`` → ``[d_model, h·d_head]``, ``W_O``
``[h, d_head, d_model]`` → ``[h·d_head, d_model]``); vectors (biases, norms) get no spectrum.

`activation_shift` compares activations before and after an edit on the same prompts:
cosine, norm ratio ‖h'‖/‖h‖ and relative distance ‖h' − h‖/‖h‖, per site and split.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from mechunlearn.core.edit import DeltaEdit, Edit
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import cache_activations, model_of, substring_last_token, using
from mechunlearn.verify.traces import cosine

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

_NAME = re.compile(r"^blocks\.(\d+)\.([a-z_0-9]+)\.(\w+)$")


def parse_weight_name(name: str) -> tuple[int | None, str, str]:
    """(layer, module, weight) of a TL weight name: ``blocks.3.mlp.W_out`` → (3, "mlp", "W_out");
    top-level weights (``embed.W_E``) get layer None."""
    m = _NAME.match(name)
    if m:
        return int(m.group(1)), m.group(2), m.group(3)
    module, _, weight = name.partition(".")
    return None, module, weight


def as_matrix(name: str, tensor: Tensor) -> Tensor | None:
    """The 2-D matrix of a weight for spectra (head-split attention flattened); None for vectors."""
    if tensor.dim() == 2:
        return tensor
    if tensor.dim() == 3:
        if name.endswith("W_O"):
            return tensor.reshape(-1, tensor.shape[-1])
        return tensor.permute(1, 0, 2).reshape(tensor.shape[1], -1)
    return None


def spectrum_stats(matrix: Float[Tensor, "rows cols"]) -> tuple[Float[Tensor, "k"], float, float]:
    """Singular values (descending), effective rank and stable rank of one matrix."""
    if not bool(matrix.any()):
        return torch.zeros(min(matrix.shape)), 0.0, 0.0
    s = torch.linalg.svdvals(matrix.double())
    total = s.sum()
    if total <= 0:
        return s.float(), 0.0, 0.0
    p = s / total
    p = p[p > 0]
    effective = float(torch.exp(-(p * p.log()).sum()))
    stable = float(s.pow(2).sum() / s[0].pow(2))
    return s.float(), effective, stable


def delta_traces(
    weights: Mapping[str, Tensor],
    deltas: Mapping[str, Tensor],
    *,
    masks: Mapping[str, Tensor] | None = None,
    spectrum: bool = True,
    n_singular: int = 16,
) -> pd.DataFrame:
    """The trace table of ``deltas`` against the unedited ``weights`` (same names and shapes)."""
    if not deltas:
        raise ValueError("no deltas to trace")
    rows: list[dict] = []
    modules: dict[tuple, list[float]] = {}
    for name, delta in deltas.items():
        if name not in weights:
            raise KeyError(f"no original weight for delta {name!r}")
        theta = weights[name].detach().double()
        if theta.shape != delta.shape:
            raise ValueError(f"delta {name} has shape {tuple(delta.shape)}, weight is {tuple(theta.shape)}")
        d = delta.detach().double()
        keep = None if masks is None else masks.get(name)
        if keep is not None:
            d = d * keep.to(d.device)
        layer, module, weight = parse_weight_name(name)
        base = {"weight_name": name, "layer": layer, "module": module, "weight": weight}
        dn, tn = float(d.norm()), float(theta.norm())
        rows += [
            {**base, "metric": "rel_frobenius", "value": dn / tn if tn > 0 else float("nan")},
            {**base, "metric": "delta_frobenius", "value": dn},
            {**base, "metric": "delta_density", "value": float((d != 0).double().mean())},
        ]
        if keep is not None:
            rows.append({**base, "metric": "mask_density", "value": float(keep.double().mean())})
        acc = modules.setdefault((layer, module), [0.0, 0.0])
        acc[0] += dn**2
        acc[1] += tn**2
        matrix = as_matrix(name, d)
        if spectrum and matrix is not None:
            s, effective, stable = spectrum_stats(matrix)
            rows += [{**base, "metric": "effective_rank", "value": effective}, {**base, "metric": "stable_rank", "value": stable}]
            rows += [{**base, "metric": "singular_value", "rank": k, "value": float(v)} for k, v in enumerate(s[:n_singular].tolist())]
    for (layer, module), (d2, t2) in modules.items():
        base = {"weight_name": f"{module}" if layer is None else f"blocks.{layer}.{module}", "layer": layer, "module": module, "weight": "all"}
        rows.append({**base, "metric": "rel_frobenius", "value": (d2 / t2) ** 0.5 if t2 > 0 else float("nan")})
        rows.append({**base, "metric": "delta_frobenius", "value": d2**0.5})
    frame = pd.DataFrame(rows)
    if "rank" not in frame:
        frame["rank"] = pd.NA
    return frame


class NoWeightChange(TypeError):
    """The edit changes no weights, so it has no weight traces."""


def weight_traces(
    model: "Model",
    edit: Edit | None = None,
    *,
    after: "Model | Mapping[str, Tensor] | None" = None,
    spectrum: bool = True,
    n_singular: int = 16,
    method: str | None = None,
    run_id: str | None = None,
) -> Result:
    """Traces of an edit against ``model``'s current (unedited) weights, or of the change from
    ``model``'s weights to ``after`` (another `Model` with the same layout, or a mapping name →
    weight): one of ``edit`` / ``after``.

    A `DeltaEdit` is read from its deltas; any other edit that changes weights (a `WeightEdit`,
    a `Compose` such as Needle's noise + gradient ascent) is applied, the weights it changed are
    copied, and it is reverted. An edit that changes no weights (hooks only) is an error.
    """
    if (edit is None) == (after is None):
        raise ValueError("give exactly one of edit= (an Edit that changes weights) or after= (a Model or name -> weight mapping)")
    described = repr(edit) if edit is not None else None
    if edit is not None and not isinstance(edit, DeltaEdit):
        if not isinstance(edit, Edit):
            raise TypeError(f"edit must be an Edit, got {type(edit).__name__}")
        with edit.applied(model) as handle:
            after = {n: model.weight(n).detach().clone() for n in handle.changed_weights}
        if not after:
            raise NoWeightChange(f"{edit!r} changes no weights (hook edits act on activations): there are no weight traces")
        label, edit = getattr(edit, "label", type(edit).__name__), None
    else:
        label = None
    if edit is not None:
        names = list(edit.deltas)
        weights = {n: model.weight(n).detach() for n in names}
        masks = None if edit.mask is None else {n: m for n, m in edit.mask.masks.items() if n in edit.deltas}
        frame = delta_traces(weights, {n: edit.dense(n) for n in names}, masks=masks, spectrum=spectrum, n_singular=n_singular)
        label = edit.label
    else:
        after_w = {n: after.weight(n).detach() for n in model.weight_names()} if hasattr(after, "weight_names") else dict(after)
        weights = {n: model.weight(n).detach() for n in after_w}
        deltas = {n: after_w[n].to(weights[n]) - weights[n] for n in after_w}
        frame = delta_traces(weights, deltas, spectrum=spectrum, n_singular=n_singular)
        label = label or "weights"
    frame["split"] = pd.NA
    frame["method"] = method or label
    frame["run_id"] = run_id
    return Result(frame, provenance(model.model_id, {"spectrum": spectrum, "n_singular": n_singular}, edit=described))


def activation_shift(
    before,
    after,
    target: "Target",
    *,
    sites: Sequence[str] | None = None,
    position: str = "last",
    splits: Sequence[str] = ("forget", "retain"),
    max_items: int | None = 600,
    batch_size: int = 128,
    method: str = "none",
    run_id: str | None = None,
    progress: bool = True,
) -> Result:
    """How an edit moved the activations at ``sites`` on each split's prompts.

    ``before`` / ``after`` are `Model`s or ``(Model, Edit)`` pairs (typically ``model`` and
    ``(model, edit)``). ``position``: ``last`` (question's last token) or ``subject`` (the
    subject's last token). Rows per (site, split): mean ``act_cosine``, ``act_norm_ratio``
    (‖h'‖/‖h‖) and ``act_rel_shift`` (‖h' − h‖/‖h‖) over items (first ``max_items`` per split).
    """
    if position not in ("last", "subject"):
        raise ValueError(f"position must be 'last' or 'subject', got {position!r}")
    model = model_of(before)
    sites = list(sites) if sites is not None else [f"blocks.{l}.hook_resid_post" for l in range(model.n_layers)]
    rows = []
    for split in splits:
        items = list(target.split(split))[:max_items]
        if not items:
            continue
        prompts = [it.prompt for it in items]
        pos = "last" if position == "last" else substring_last_token(model, prompts, [it.subject for it in items])
        acts = []
        for subject in (before, after):
            with using(subject) as m:
                acts.append(cache_activations(m, prompts, sites, positions=pos, batch_size=batch_size, progress=progress))
        for site in sites:
            h, h2 = acts[0][site].double(), acts[1][site].double()
            norm = h.norm(dim=-1).clamp_min(1e-12)
            values = {
                "act_cosine": cosine(h, h2).double(),
                "act_norm_ratio": h2.norm(dim=-1) / norm,
                "act_rel_shift": (h2 - h).norm(dim=-1) / norm,
            }
            layer = model.check_site(site).layer
            for metric, v in values.items():
                rows.append({"site": site, "layer": layer, "split": split, "metric": metric, "value": float(v.mean()), "n_items": len(items), "position": position})
    if not rows:
        raise ValueError(f"target {target.name!r} has no items in splits {list(splits)}")
    frame = pd.DataFrame(rows)
    frame["method"] = method
    frame["run_id"] = run_id
    return Result(frame, provenance(model.model_id, {"sites": sites, "position": position, "max_items": max_items}, target=target.name))
