"""Intrinsic traces of an edit on model vectors (ConceptVectors' before/after metrics).

For a vector ``v`` (e.g. a value vector ``blocks.23.mlp.W_out[1508]``) before an edit and
``v'`` after it:

| metric     | definition                                                                     |
| ---------- | ------------------------------------------------------------------------------ |
| ``cosine`` | cos(v, v')                                                                     |
| ``l2``     | ‖v − v'‖                                                                       |
| ``rel_l2`` | ‖v − v'‖ / ‖v‖                                                                 |
| ``jaccard``| \\|T ∩ T'\\| / \\|T ∪ T'\\| of the top-k token sets, T from ``s · v · W_U`` and T' from ``s · v' · W_U'`` (the edited model's unembedding) |

``s`` is the vector's sign (+1 or −1): a concept found in a vector's *bottom* tokens (a gated
MLP, whose activation multiplies ``v`` by either sign, see `mechunlearn.locate.concept_vectors`)
lives in ``−v``, and its token set is the top-k of ``−v · W_U``. Pass the concept's
`ConceptLocation` as the site (its sign is used), or ``signs=``; a bare site means +1.

The tensor functions (`cosine`, `l2`, `topk_jaccard`) work on any batch shape. `snapshot` records
the vectors and their top-k ids at one moment; `compare` turns two snapshots into a wide table;
`vector_traces` does it for an edit and returns a tidy `Result`:

>>> result = vector_traces(model, ["blocks.23.mlp.W_out[1508]"], edit)    # applies and reverts
>>> before = snapshot(model, sites); handle = edit.apply(model)
>>> vector_traces(model, sites, handle, before=before)                       # an applied edit
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechunlearn.core.edit import Edit, EditHandle
from mechunlearn.core.result import Result, provenance
from mechunlearn.core.site import Site

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.concepts import ConceptLocation

TRACE_METRICS = ("cosine", "l2", "rel_l2", "jaccard")
"""Metrics of `compare` / `vector_traces`."""


def cosine(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"], eps: float = 1e-12) -> Float[Tensor, "..."]:
    """Cosine similarity over the last dimension (0 when either vector is zero)."""
    _check_pair(a, b)
    a, b = a.double(), b.double()
    denom = (a.norm(dim=-1) * b.norm(dim=-1)).clamp_min(eps)
    return ((a * b).sum(-1) / denom).float()


def l2(a: Float[Tensor, "... d"], b: Float[Tensor, "... d"]) -> Float[Tensor, "..."]:
    """Euclidean distance ``‖a − b‖`` over the last dimension."""
    _check_pair(a, b)
    return (a.double() - b.double()).norm(dim=-1).float()


def topk_jaccard(ids_a: Int[Tensor, "... k"], ids_b: Int[Tensor, "... k2"]) -> Float[Tensor, "..."]:
    """Jaccard index ``|A ∩ B| / |A ∪ B|`` of two id sets per row (ids within a row are distinct)."""
    if ids_a.shape[:-1] != ids_b.shape[:-1]:
        raise ValueError(f"id tensors must share batch shape, got {tuple(ids_a.shape)} and {tuple(ids_b.shape)}")
    inter = (ids_a[..., :, None] == ids_b[..., None, :]).any(-1).sum(-1).double()
    union = ids_a.shape[-1] + ids_b.shape[-1] - inter
    return (inter / union.clamp_min(1)).float()


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"vectors must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")


@dataclass(frozen=True)
class VectorSnapshot:
    """Some vectors of a model at one moment, with the ids of their top-k tokens under the
    model's unembedding at that moment."""

    model_id: str
    """The model it was taken from."""
    sites: tuple[Site, ...]
    """The vectors' sites (each a ``d_model``-wide slice, e.g. a value vector)."""
    vectors: Float[Tensor, "n d_model"]
    """Copies of the vectors."""
    top_ids: Int[Tensor, "n k"]
    """Each vector's top-k token ids (``v · W_U``, best first)."""
    k: int
    """Top-k size."""
    final_norm: bool
    """Whether ``W_U`` was scaled by the final norm's gain."""
    signs: tuple[int, ...]
    """Each vector's sign: ``top_ids`` are the top-k of ``sign · v · W_U``."""


SiteLike = Union[Site, str, "ConceptLocation"]
"""A vector's site, or a concept's `ConceptLocation` (which carries its sign)."""


def _sites_and_signs(model: "Model", sites: Sequence[SiteLike], signs: Sequence[int] | None) -> tuple[tuple[Site, ...], tuple[int, ...]]:
    from mechunlearn.world.concepts import ConceptLocation

    if not sites:
        raise ValueError("no sites given; pass value-vector sites like blocks.3.mlp.W_out[401] or concept locations")
    own = [s.sign if isinstance(s, ConceptLocation) else 1 for s in sites]
    if signs is None:
        signs = own
    else:
        signs = [int(x) for x in signs]
        if len(signs) != len(sites):
            raise ValueError(f"{len(signs)} signs for {len(sites)} sites; give one +1 or -1 per site")
        if any(x not in (1, -1) for x in signs):
            raise ValueError(f"signs must be +1 or -1, got {sorted(set(signs))}")
        clash = [str(s.site) for s, x in zip(sites, signs) if isinstance(s, ConceptLocation) and s.sign != x]
        if clash:
            raise ValueError(f"signs= contradicts the concept locations' own signs at {', '.join(clash)}; drop signs= or pass bare sites")
    parsed = tuple(model.check_site(s.site if isinstance(s, ConceptLocation) else s) for s in sites)
    return parsed, tuple(signs)


def snapshot(
    model: "Model", sites: Sequence[SiteLike], *, k: int = 200, final_norm: bool = False, signs: Sequence[int] | None = None
) -> VectorSnapshot:
    """Copy the vectors at ``sites`` and record the top-k token ids of ``sign · v`` under the current ``W_U``."""
    from mechunlearn.locate.concept_vectors import top_token_ids, unembedding

    parsed, signs = _sites_and_signs(model, sites, signs)
    vectors = []
    for site in parsed:
        v = model.weight(site).detach()
        if v.dim() != 1 or v.shape[0] != model.d_model:
            raise ValueError(f"{site} is not a d_model-wide vector (shape {tuple(v.shape)}); use e.g. blocks.3.mlp.W_out[401]")
        vectors.append(v.clone().float())
    stacked = torch.stack(vectors)
    oriented = stacked * torch.tensor(signs, dtype=stacked.dtype, device=stacked.device)[:, None]
    ids = top_token_ids(oriented, unembedding(model, final_norm=final_norm), k)
    return VectorSnapshot(model.model_id, parsed, stacked, ids, k, final_norm, signs)


def compare(before: VectorSnapshot, after: VectorSnapshot) -> pd.DataFrame:
    """Wide table, one row per site: cosine, l2, rel_l2, jaccard, norm_before, norm_after."""
    if before.sites != after.sites:
        raise ValueError("the two snapshots cover different sites")
    if before.k != after.k or before.final_norm != after.final_norm or before.signs != after.signs:
        raise ValueError("the two snapshots used different k, final_norm or signs")
    norm_before = before.vectors.norm(dim=-1)
    dist = l2(before.vectors, after.vectors)
    return pd.DataFrame(
        {
            "site": [str(s) for s in before.sites],
            "sign": list(before.signs),
            "layer": pd.array([s.layer for s in before.sites], dtype="Int64"),
            "index": [s.index[0] if len(s.index) == 1 else None for s in before.sites],
            "cosine": cosine(before.vectors, after.vectors).tolist(),
            "l2": dist.tolist(),
            "rel_l2": (dist / norm_before.clamp_min(1e-12)).tolist(),
            "jaccard": topk_jaccard(before.top_ids, after.top_ids).tolist(),
            "norm_before": norm_before.tolist(),
            "norm_after": after.vectors.norm(dim=-1).tolist(),
        }
    )


def vector_traces(
    model: "Model",
    sites: Sequence[SiteLike],
    edit: Edit | EditHandle | None = None,
    *,
    before: VectorSnapshot | None = None,
    after: VectorSnapshot | None = None,
    k: int = 200,
    final_norm: bool = False,
    signs: Sequence[int] | None = None,
    method: str | None = None,
) -> Result:
    """Before/after traces of the vectors at ``sites`` as a tidy `Result` (metrics of `TRACE_METRICS`).

    ``sites`` may be concept locations (``concept.location``): the Jaccard then compares the
    token sets of the concept's own sign; ``signs=`` gives them for bare sites.

    Ways to call it:

    * ``edit`` an `Edit` (or a reverted `EditHandle`): snapshot, apply, snapshot, revert.
    * ``edit`` an active `EditHandle`: the model holds the edited weights now; ``before`` must
      be a `snapshot` taken before the edit was applied.
    * no edit: compare ``before`` with ``after`` (default: the model as it is now).
    """
    if isinstance(edit, EditHandle):
        if edit.active:
            if before is None:
                raise ValueError(
                    "the edit is already applied, so its before-state is gone: pass before=snapshot(model, sites) "
                    "taken before applying it, or pass the Edit itself (it is applied and reverted here)"
                )
            after = snapshot(model, sites, k=k, final_norm=final_norm, signs=before.signs)
        else:
            edit = edit.edit
    if isinstance(edit, Edit):
        if before is not None or after is not None:
            raise ValueError("give either an Edit or before/after snapshots, not both")
        before = snapshot(model, sites, k=k, final_norm=final_norm, signs=signs)
        with edit.applied(model):
            after = snapshot(model, sites, k=k, final_norm=final_norm, signs=before.signs)
    elif edit is not None and not isinstance(edit, EditHandle):
        raise TypeError(f"edit must be an Edit or an EditHandle, got {type(edit).__name__}")
    if before is None:
        raise ValueError("nothing to compare: pass an edit, or a before snapshot")
    if after is None:
        after = snapshot(model, sites, k=before.k, final_norm=before.final_norm, signs=before.signs)
    wide = compare(before, after)
    long = wide.melt(id_vars=["site", "sign", "layer", "index"], value_vars=list(TRACE_METRICS), var_name="metric", value_name="value")
    label = method or (repr(edit.edit if isinstance(edit, EditHandle) else edit) if edit is not None else "edit")
    long["method"] = label
    return Result(long, provenance(model.model_id, {"k": before.k, "final_norm": before.final_norm}, sites=[str(s) for s in before.sites]))
