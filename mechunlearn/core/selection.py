"""Selections: immutable, scored sets of model parts that a localizer returns.

Two forms share one algebra (``top``, ``frac``, ``where``, ``|``, ``&``, ``to_frame``,
``assert_count_is``):

* `Selection` — a scored list of `Site`s (value vectors, SAE latents, layers …), kept sorted by
  descending score, with optional per-site extras (e.g. each value vector's top tokens).
* `MaskSelection` — per-weight score tensors and boolean masks, for weight-level methods
  (SalUn, WAGLE). One tensor per weight, never a Python object per element, so it scales to
  every weight of smollm2-135m.

>>> sel = Selection.from_scores(sites, scores).top(10).where(lambda r: r.layer >= 2)
>>> sel.assert_count_is(len(sel)).to_frame()
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mechunlearn.core.site import Site


def _count_for_fraction(p: float, n: int) -> int:
    if not 0.0 < p <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {p}")
    return max(1, math.ceil(p * n)) if n else 0


@dataclass(frozen=True)
class SiteScore:
    """One row of a `Selection`, handed to ``where`` predicates."""

    site: Site
    score: float
    extras: Mapping[str, Any]

    @property
    def layer(self) -> int | None:
        return self.site.layer

    @property
    def index(self) -> tuple[int, ...]:
        return self.site.index

    def __getattr__(self, name: str) -> Any:
        try:
            return self.extras[name]
        except KeyError:
            raise AttributeError(name) from None


class Selection:
    """An immutable, scored, sorted set of sites (highest score first).

    Extras are per-site columns (lists aligned with ``sites``) that travel with each site through
    ``top``/``where``/``|``/``&`` and appear in ``to_frame()``.
    """

    __slots__ = ("_sites", "_scores", "_extras", "_meta")

    def __init__(
        self,
        sites: Sequence[Site | str],
        scores: Sequence[float] | np.ndarray | Tensor | None = None,
        extras: Mapping[str, Sequence[Any]] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        parsed = tuple(Site.parse(s) if isinstance(s, str) else s for s in sites)
        if scores is None:
            scores = np.ones(len(parsed))
        if isinstance(scores, Tensor):
            scores = scores.detach().cpu().double().numpy()
        arr = np.asarray(scores, dtype=np.float64).reshape(-1)
        if arr.shape[0] != len(parsed):
            raise ValueError(f"got {len(parsed)} sites but {arr.shape[0]} scores")
        if np.isnan(arr).any():
            raise ValueError("selection scores contain NaN; check the localizer's inputs")
        if len(set(parsed)) != len(parsed):
            raise ValueError("a selection cannot contain the same site twice")
        extras = {k: list(v) for k, v in (extras or {}).items()}
        for key, col in extras.items():
            if len(col) != len(parsed):
                raise ValueError(f"extra column {key!r} has {len(col)} values for {len(parsed)} sites")
        order = np.argsort(-arr, kind="stable")
        self._sites = tuple(parsed[i] for i in order)
        self._scores = arr[order]
        self._scores.setflags(write=False)
        self._extras = MappingProxyType({k: tuple(col[i] for i in order) for k, col in extras.items()})
        self._meta = MappingProxyType(dict(meta or {}))

    @classmethod
    def from_scores(cls, sites, scores, **extras) -> "Selection":
        """Build from aligned sites and scores, extras as keyword columns."""
        return cls(sites, scores, extras)

    # ----- read access
    @property
    def sites(self) -> tuple[Site, ...]:
        return self._sites

    @property
    def scores(self) -> np.ndarray:
        return self._scores

    @property
    def meta(self) -> Mapping[str, Any]:
        """Provenance of the localizer that made it (name, config)."""
        return self._meta

    def __len__(self) -> int:
        return len(self._sites)

    def __iter__(self) -> Iterator[Site]:
        return iter(self._sites)

    def __contains__(self, site: Site | str) -> bool:
        return (Site.parse(site) if isinstance(site, str) else site) in set(self._sites)

    def __getitem__(self, i: int) -> SiteScore:
        return self._row(i)

    def _row(self, i: int) -> SiteScore:
        return SiteScore(self._sites[i], float(self._scores[i]), {k: v[i] for k, v in self._extras.items()})

    def rows(self) -> Iterator[SiteScore]:
        """Every row as a `SiteScore`, best first."""
        return (self._row(i) for i in range(len(self)))

    def _take(self, idx: Iterable[int]) -> "Selection":
        idx = list(idx)
        return Selection(
            [self._sites[i] for i in idx],
            self._scores[idx] if idx else np.zeros(0),
            {k: [v[i] for i in idx] for k, v in self._extras.items()},
            self._meta,
        )

    # ----- refinement
    def top(self, k: int) -> "Selection":
        """The ``k`` highest-scoring sites."""
        if k < 0:
            raise ValueError(f"top(k) needs k >= 0, got {k}")
        return self._take(range(min(k, len(self))))

    def frac(self, p: float) -> "Selection":
        """The best ``ceil(p * n)`` sites."""
        return self.top(_count_for_fraction(p, len(self)))

    def where(self, pred: Callable[[SiteScore], bool] | None = None, **equals: Any) -> "Selection":
        """Sites whose row satisfies ``pred`` and whose attributes equal the keyword values.

        >>> sel.where(layer=3); sel.where(lambda r: r.score > 0.5 and r.site.module == "mlp")
        """
        keep = []
        for i in range(len(self)):
            row = self._row(i)
            if pred is not None and not pred(row):
                continue
            if any(getattr(row, key) != value for key, value in equals.items()):
                continue
            keep.append(i)
        return self._take(keep)

    def __or__(self, other: "Selection") -> "Selection":
        """Union; a site in both keeps the higher score (and that side's extras)."""
        self._check_peer(other)
        best: dict[Site, tuple[float, dict]] = {}
        for sel in (self, other):
            for row in sel.rows():
                prev = best.get(row.site)
                if prev is None or row.score > prev[0]:
                    best[row.site] = (row.score, dict(row.extras))
        keys = sorted(set(self._extras) | set(other._extras))
        sites = list(best)
        return Selection(
            sites,
            [best[s][0] for s in sites],
            {k: [best[s][1].get(k) for s in sites] for k in keys},
            dict(self._meta, combined="union"),
        )

    def __and__(self, other: "Selection") -> "Selection":
        """Intersection; scores and extras come from the left operand."""
        self._check_peer(other)
        theirs = set(other._sites)
        return self._take(i for i, s in enumerate(self._sites) if s in theirs)

    def _check_peer(self, other: object) -> None:
        if not isinstance(other, Selection):
            raise TypeError(f"cannot combine a Selection with {type(other).__name__}")

    def assert_count_is(self, n: int) -> "Selection":
        """Raise unless exactly ``n`` sites are selected; returns ``self`` for chaining."""
        if len(self) != n:
            raise AssertionError(f"expected {n} selected sites, found {len(self)}")
        return self

    # ----- output
    def to_frame(self) -> pd.DataFrame:
        """One row per site: site, kind, name, layer, index, score, extras."""
        frame = pd.DataFrame(
            {
                "site": [str(s) for s in self._sites],
                "kind": [s.kind for s in self._sites],
                "name": [s.name for s in self._sites],
                "layer": pd.array([s.layer for s in self._sites], dtype="Int64"),
                "index": [s.index[0] if len(s.index) == 1 else (s.index or None) for s in self._sites],
                "score": self._scores,
            }
        )
        for key, col in self._extras.items():
            frame[key] = list(col)
        return frame

    def __repr__(self) -> str:
        head = ", ".join(f"{s}:{v:.3g}" for s, v in zip(self._sites[:3], self._scores[:3]))
        more = f", … +{len(self) - 3}" if len(self) > 3 else ""
        return f"Selection({len(self)} sites: {head}{more})"

    def _repr_html_(self) -> str:
        return f"<b>Selection</b> of {len(self)} sites" + self.to_frame().head(20).to_html(index=False)


@dataclass(frozen=True)
class MaskSelection:
    """Per-weight scores and boolean masks over named weights (TL layout).

    ``scores[name]`` are float tensors; ``masks[name]`` boolean tensors of the same shape. A fresh
    selection from scores selects everything; ``top``/``frac`` rank globally (default) or within
    each weight (``per_tensor=True``). Ties at the threshold are broken by position so counts
    are exact.
    """

    scores: Mapping[str, Tensor]
    masks: Mapping[str, Tensor] = field(default=None)  # type: ignore[assignment]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.scores:
            raise ValueError("a MaskSelection needs scores for at least one weight")
        masks = self.masks
        if masks is None:
            masks = {n: torch.ones_like(s, dtype=torch.bool) for n, s in self.scores.items()}
        if set(masks) != set(self.scores):
            raise ValueError("masks and scores must name the same weights")
        for name, s in self.scores.items():
            if masks[name].shape != s.shape or masks[name].dtype != torch.bool:
                raise ValueError(f"mask of {name} must be a bool tensor of shape {tuple(s.shape)}")
            if torch.isnan(s).any():
                raise ValueError(f"scores of {name} contain NaN")
        object.__setattr__(self, "scores", MappingProxyType(dict(self.scores)))
        object.__setattr__(self, "masks", MappingProxyType(dict(masks)))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    @property
    def names(self) -> list[str]:
        return list(self.scores)

    def __len__(self) -> int:
        """Number of selected scalar weights."""
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def total(self) -> int:
        """Number of scored scalar weights."""
        return int(sum(s.numel() for s in self.scores.values()))

    @property
    def density(self) -> float:
        """Selected fraction of the scored weights."""
        return len(self) / self.total

    def _replace(self, masks: Mapping[str, Tensor], **meta: Any) -> "MaskSelection":
        return MaskSelection(self.scores, masks, dict(self.meta, **meta))

    def top(self, k: int, *, per_tensor: bool = False) -> "MaskSelection":
        """Keep the ``k`` best currently selected weights (globally, or ``k`` per tensor)."""
        if k < 0:
            raise ValueError(f"top(k) needs k >= 0, got {k}")
        if per_tensor:
            return self._replace({n: _top_mask(self.scores[n], self.masks[n], k) for n in self.names}, top=k, per_tensor=True)
        # One flat pass over every weight: values outside the current mask rank last.
        flat_scores = torch.cat([self.scores[n].float().reshape(-1) for n in self.names])
        flat_mask = torch.cat([self.masks[n].reshape(-1) for n in self.names])
        keep = _top_mask(flat_scores, flat_mask, k)
        masks, offset = {}, 0
        for n in self.names:
            size = self.scores[n].numel()
            masks[n] = keep[offset : offset + size].view(self.scores[n].shape) & self.masks[n]
            offset += size
        return self._replace(masks, top=k, per_tensor=False)

    def frac(self, p: float, *, per_tensor: bool = False) -> "MaskSelection":
        """Keep the best fraction ``p`` (SalUn's / WAGLE's ``keep_ratio``) of selected weights."""
        if per_tensor:
            masks = {n: _top_mask(self.scores[n], self.masks[n], _count_for_fraction(p, int(self.masks[n].sum()))) for n in self.names}
            return self._replace(masks, frac=p, per_tensor=True)
        return self.top(_count_for_fraction(p, len(self)))

    def where(self, pred: Callable[[str], bool]) -> "MaskSelection":
        """Keep only the weights whose name satisfies ``pred`` (e.g. ``lambda n: '.mlp.' in n``)."""
        kept = {n: s for n, s in self.scores.items() if pred(n)}
        if not kept:
            raise ValueError("where(...) removed every weight from the mask selection")
        return MaskSelection(kept, {n: self.masks[n] for n in kept}, self.meta)

    def _combine(self, other: "MaskSelection", op: Callable[[Tensor, Tensor], Tensor], keep_missing: bool) -> "MaskSelection":
        if not isinstance(other, MaskSelection):
            raise TypeError(f"cannot combine a MaskSelection with {type(other).__name__}")
        names = list(dict.fromkeys([*self.names, *other.names])) if keep_missing else [n for n in self.names if n in other.scores]
        if not names:
            raise ValueError("the two mask selections share no weights")
        scores, masks = {}, {}
        for n in names:
            mine, theirs = self.masks.get(n), other.masks.get(n)
            scores[n] = self.scores[n] if n in self.scores else other.scores[n]
            if mine is None or theirs is None:
                masks[n] = mine if mine is not None else theirs
            else:
                masks[n] = op(mine, theirs)
        return MaskSelection(scores, masks, self.meta)

    def __or__(self, other: "MaskSelection") -> "MaskSelection":
        return self._combine(other, torch.logical_or, keep_missing=True)

    def __and__(self, other: "MaskSelection") -> "MaskSelection":
        return self._combine(other, torch.logical_and, keep_missing=False)

    def assert_count_is(self, n: int) -> "MaskSelection":
        """Raise unless exactly ``n`` scalar weights are selected."""
        if len(self) != n:
            raise AssertionError(f"expected {n} selected weights, found {len(self)}")
        return self

    def to_frame(self) -> pd.DataFrame:
        """One row per weight: name, layer, module, numel, selected, density, score stats."""
        rows = []
        for n in self.names:
            site = Site("param", n)
            s, m = self.scores[n].float(), self.masks[n]
            rows.append(
                {
                    "name": n,
                    "layer": site.layer,
                    "module": site.module,
                    "numel": s.numel(),
                    "selected": int(m.sum()),
                    "density": float(m.float().mean()),
                    "score_mean": float(s.mean()),
                    "score_max": float(s.max()),
                }
            )
        frame = pd.DataFrame(rows)
        frame["layer"] = frame["layer"].astype("Int64")
        return frame

    def __repr__(self) -> str:
        return f"MaskSelection({len(self):,} of {self.total:,} weights selected, {len(self.names)} tensors)"


def _top_mask(scores: Tensor, mask: Tensor, k: int) -> Tensor:
    """Boolean mask of the ``k`` highest scores among ``mask``-selected entries (exact count)."""
    mask = mask.to(scores.device)
    flat = torch.where(mask, scores.float(), -torch.inf).reshape(-1)
    k = min(k, int(mask.sum()))
    out = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        out[torch.topk(flat, k, sorted=False).indices] = True
    return out.view(scores.shape)
