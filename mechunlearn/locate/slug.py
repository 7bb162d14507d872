"""SLUG: single layer, single gradient unlearning (Cai et al. 2024/2025).

One forget gradient and one retain gradient at θ_o; per weight tensor ``l``

* importance ``I_l = ‖g_f,l‖ / ‖θ_l‖`` (how much the forget loss cares, relative to the size of
  the tensor) and
* alignment ``A_l = |cos(g_f,l, g_r,l)|`` (how much a forget step would also move retain).

Candidates are the Pareto front of high I and low A. For each candidate tensor, one step
along the forget gradient, with the smallest step size λ that meets the forget criterion
(forget exact match ≤ ``forget_threshold``), found by bracketing and bisection. Every trial is
a `WeightEdit` applied from θ_o and reverted bit for bit before the next one.

>>> result = slug(model, target, SlugConfig(forget_threshold=0.1))
>>> result.table                      # one row per Pareto tensor: λ, forget / retain EM …
>>> with result.edit.applied(model):  # the chosen one-tensor edit
...     behavior(model, target)

**Sign.** METHODS.md writes the step as ``θ + λ·g_f`` with ``g_f`` the gradient of −NLL_f; that
direction *lowers* the forget NLL. The unlearning step (the paper's descent on the forget loss
−NLL_f) is ``θ − λ·∇(−NLL_f) = θ + λ·∇NLL_f``, which is what we apply. Importance and
alignment do not depend on the sign.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.edit import WeightEdit
from mechunlearn.core.selection import Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.locate.saliency import DATA_CHOICES, Gradients, family_names, gradients, seeded_subset

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- Pareto front
def pareto_front(
    high: Float[Tensor, "n"] | Float[np.ndarray, "n"] | Sequence[float], low: Float[Tensor, "n"] | Float[np.ndarray, "n"] | Sequence[float]
) -> Bool[np.ndarray, "n"]:
    """Non-dominated points when maximising ``high`` and minimising ``low``.

    Point ``j`` dominates ``i`` if ``high_j ≥ high_i`` and ``low_j ≤ low_i`` with at least one
    strict. Identical points do not dominate each other (both stay on the front).
    """
    hi = np.asarray(high.detach().cpu() if isinstance(high, Tensor) else high, dtype=np.float64)
    lo = np.asarray(low.detach().cpu() if isinstance(low, Tensor) else low, dtype=np.float64)
    if hi.shape != lo.shape or hi.ndim != 1:
        raise ValueError(f"high and low must be 1-D of the same length, got {hi.shape} and {lo.shape}")
    if np.isnan(hi).any() or np.isnan(lo).any():
        raise ValueError("Pareto front of NaN values; check the gradients")
    ge = hi[None, :] >= hi[:, None]  # [i, j]: j at least as high as i
    le = lo[None, :] <= lo[:, None]
    strict = (hi[None, :] > hi[:, None]) | (lo[None, :] < lo[:, None])
    return ~(ge & le & strict).any(axis=1)


# --------------------------------------------------------------------------- step search
@dataclass(frozen=True)
class StepSearch:
    """Outcome of `search_step`: the smallest passing step found and every trial."""

    step: float
    """Smallest λ that passed (or the largest tried, if none passed)."""
    passed: bool
    """Whether any trial met the criterion."""
    trials: tuple[tuple[float, bool], ...]
    """Every (λ, passed) in the order tried."""


def search_step(passes: Callable[[float], bool], start: float, *, iterations: int = 10, max_expand: int = 8) -> StepSearch:
    """Smallest λ > 0 with ``passes(λ)``, for a criterion that is monotone in λ.

    Bracket first (halve from ``start`` while it passes, double while it fails, at most
    ``max_expand`` times), then bisect ``iterations`` times. The result passes, and a step
    smaller by more than ``bracket / 2**iterations`` failed.
    """
    if not start > 0:
        raise ValueError(f"the first step must be > 0, got {start}")
    if iterations < 0 or max_expand < 0:
        raise ValueError("iterations and max_expand must be >= 0")
    trials: list[tuple[float, bool]] = []

    def trial(lam: float) -> bool:
        ok = bool(passes(lam))
        trials.append((lam, ok))
        return ok

    lo: float | None = None
    hi: float | None = None
    if trial(start):
        hi = start
        for _ in range(max_expand):
            lam = hi / 2
            if trial(lam):
                hi = lam
            else:
                lo = lam
                break
        if lo is None:  # even the smallest tried step passes
            return StepSearch(hi, True, tuple(trials))
    else:
        lo = start
        for _ in range(max_expand):
            lam = lo * 2
            if trial(lam):
                hi = lam
                break
            lo = lam
        if hi is None:
            return StepSearch(lo, False, tuple(trials))
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if trial(mid):
            hi = mid
        else:
            lo = mid
    return StepSearch(hi, True, tuple(trials))


# --------------------------------------------------------------------------- config and stats
@LOCALIZERS.register("slug")
@dataclass(frozen=True)
class SlugConfig:
    """SLUG: which tensors compete, the data of the two gradients, and the step search."""

    family: str | tuple[str, ...] = "matrices"
    """Candidate weight tensors: a family (default ``matrices``: attention and MLP matrices; the
    paper ranks layers' weight matrices) or explicit TL weight names."""
    data: str = "items"
    """Data of both gradients: ``items``, ``texts`` or ``both`` (see `gradients`)."""
    batch_size: int = 64
    """Items per forward/backward batch."""
    retain_items: int | None = 512
    """Retain items for g_r (seeded subset; ``None``: all)."""
    seed: int = 0
    """Seed of the retain subsets (gradient and evaluation)."""
    forget_threshold: float = 0.1
    """Forget criterion: greedy exact match on the forget items ≤ this."""
    init_step: float = 0.1
    """First trial step as a fraction of the tensor's norm: ‖λ·g‖ = init_step · ‖θ‖ (paper: 10%)."""
    iterations: int = 10
    """Bisection steps after bracketing (precision: bracket / 2**iterations)."""
    max_expand: int = 8
    """At most this many halvings / doublings of the step while bracketing."""
    forget_eval_items: int | None = None
    """Forget items the step search checks the criterion on (seeded subset; ``None``: all). The
    reported ``forget_em`` of each tensor is always measured on every forget item."""
    retain_eval_items: int | None = 512
    """Retain items scored for each tensor's trade-off row (seeded subset; ``None``: all)."""
    max_candidates: int | None = None
    """Search only the this-many most important Pareto tensors (``None``: all of them)."""

    def __post_init__(self) -> None:
        if self.data not in DATA_CHOICES:
            raise ValueError(f"data must be one of {DATA_CHOICES}, got {self.data!r}")
        if not 0.0 <= self.forget_threshold <= 1.0:
            raise ValueError(f"forget_threshold is an exact-match rate in [0, 1], got {self.forget_threshold}")
        if not self.init_step > 0:
            raise ValueError(f"init_step must be > 0, got {self.init_step}")
        if self.iterations < 0 or self.max_expand < 0:
            raise ValueError("iterations and max_expand must be >= 0")
        for name in ("retain_items", "forget_eval_items", "retain_eval_items"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None (all items), got {value}")
        if self.max_candidates is not None and self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1 or None, got {self.max_candidates}")
        if not isinstance(self.family, str):
            object.__setattr__(self, "family", tuple(self.family))

    def weight_names(self, model: "Model") -> list[str]:
        """Candidate tensors on ``model``."""
        return family_names(model, self.family)

    def gradients(self, model: "Model", target: "Target", *, progress: bool = True) -> Gradients:
        """The forget and retain gradients at θ_o."""
        return gradients(
            model, target, self.weight_names(model), data=self.data, batch_size=self.batch_size,
            retain=True, retain_items=self.retain_items, seed=self.seed, progress=progress,
        )

    def locate(self, model: "Model", target: "Target", *, grads: Gradients | None = None, progress: bool = True) -> Selection:
        """The Pareto tensors as a `Selection` scored by importance (extras: alignment, norms)."""
        stats = tensor_stats(model, grads if grads is not None else self.gradients(model, target, progress=progress), self.weight_names(model))
        front = stats[stats["pareto"]]
        return Selection(
            [Site("param", n) for n in front["name"]],
            front["importance"].to_numpy(),
            {c: front[c].tolist() for c in ("alignment", "grad_norm", "weight_norm")},
            {"localizer": "slug", "config": asdict(self)},
        )


def tensor_stats(model: "Model", grads: Gradients, names: list[str] | None = None) -> pd.DataFrame:
    """One row per tensor: importance ``‖g_f‖/‖θ‖``, alignment ``|cos(g_f, g_r)|``, norms, Pareto flag.

    Tensors whose weights are all zero have no relative scale and are left out (logged).
    """
    names = list(grads.names if names is None else names)
    grads.require(names, retain=True)
    rows = []
    for n in names:
        theta = model.weight(n).detach().float()
        g_f, g_r = grads.forget[n].float(), grads.retain[n].float()
        w_norm, f_norm, r_norm = float(theta.norm()), float(g_f.norm()), float(g_r.norm())
        if w_norm == 0.0:
            log.info("SLUG skips %s: its weights are all zero", n)
            continue
        cos = float((g_f * g_r).sum()) / max(f_norm * r_norm, 1e-30)
        site = Site("param", n)
        rows.append({"name": n, "layer": site.layer, "module": site.module, "weight": n.rsplit(".", 1)[-1],
                     "importance": f_norm / w_norm, "alignment": abs(cos), "grad_norm": f_norm,
                     "retain_grad_norm": r_norm, "weight_norm": w_norm})
    if not rows:
        raise ValueError("no candidate tensor has non-zero weights")
    stats = pd.DataFrame(rows)
    stats["layer"] = stats["layer"].astype("Int64")
    stats["pareto"] = pareto_front(stats["importance"].to_numpy(), stats["alignment"].to_numpy())
    return stats


# --------------------------------------------------------------------------- the edit
@dataclass(frozen=True)
class SlugResult:
    """What `slug` found: every tensor's statistics, every Pareto tensor's trade-off, the edit."""

    stats: pd.DataFrame
    """All candidate tensors (`tensor_stats`), with the ``pareto`` flag."""
    table: pd.DataFrame
    """One row per searched Pareto tensor: importance, alignment, step (λ), step_norm,
    rel_step (‖λ·g‖/‖θ‖), passed, forget_em, retain_em, trials, chosen."""
    chosen: str | None
    """Name of the chosen tensor (passing, best retain exact match), or ``None`` if none passed."""
    edits: dict[str, WeightEdit] = field(repr=False)
    """The one-step edit of every searched Pareto tensor (passing or not)."""
    config: SlugConfig = field(default_factory=SlugConfig)
    """The configuration that produced it."""

    @property
    def edit(self) -> WeightEdit | None:
        """The chosen tensor's edit (``None`` if no tensor met the criterion)."""
        return None if self.chosen is None else self.edits[self.chosen]


def step_edit(name: str, direction: Tensor, step: float) -> WeightEdit:
    """The one-step edit ``θ_name + step · direction`` as a revertible `WeightEdit`."""
    return WeightEdit(name, "add", value=step * direction)


def slug(model: "Model", target: "Target", config: SlugConfig = SlugConfig(), *, grads: Gradients | None = None, progress: bool = True) -> SlugResult:
    """Run SLUG: gradients, Pareto front, a step search per Pareto tensor, the chosen edit.

    The model is unchanged on return (every trial is reverted exactly).
    """
    from mechunlearn.unlearn.unlearner import forget_exact_match as exact_match

    if not target.forget:
        raise ValueError(f"target {target.name!r} has no forget items for the forget criterion")
    grads = grads if grads is not None else config.gradients(model, target, progress=progress)
    stats = tensor_stats(model, grads, config.weight_names(model))
    front = stats[stats["pareto"]].sort_values("importance", ascending=False)
    if config.max_candidates is not None:
        front = front.head(config.max_candidates)
    forget_items = list(target.forget)
    search_items = seeded_subset(forget_items, config.forget_eval_items, config.seed + 2)
    retain_items = seeded_subset(list(target.retain), config.retain_eval_items, config.seed + 1)

    rows, edits = [], {}
    for row in tqdm(front.itertuples(index=False), total=len(front), desc="SLUG step search", leave=False, disable=not progress):
        direction = grads.forget[row.name]  # ∇NLL_f: the unlearning direction (module docstring)

        def passes(lam: float) -> bool:
            with step_edit(row.name, direction, lam).applied(model):
                return exact_match(model, search_items) <= config.forget_threshold

        start = config.init_step * row.weight_norm / max(row.grad_norm, 1e-30)
        found = search_step(passes, start, iterations=config.iterations, max_expand=config.max_expand)
        edit = step_edit(row.name, direction, found.step)
        with edit.applied(model):
            forget_em = exact_match(model, forget_items)
            retain_em = exact_match(model, retain_items) if retain_items else float("nan")
        edits[row.name] = edit
        step_norm = found.step * row.grad_norm
        rows.append({**row._asdict(), "step": found.step, "step_norm": step_norm, "rel_step": step_norm / row.weight_norm,
                     "passed": found.passed, "forget_em": forget_em, "retain_em": retain_em, "trials": len(found.trials)})
        log.info("SLUG %s: λ=%.4g (%.1f%% of ‖θ‖) passed=%s forget=%.3f retain=%.3f", row.name, found.step, 100 * step_norm / row.weight_norm, found.passed, forget_em, retain_em)
    table = pd.DataFrame(rows)
    chosen = None
    passing = table[table["passed"]] if len(table) else table
    if len(passing):
        best = passing.sort_values(["retain_em", "rel_step"], ascending=[False, True]).iloc[0]
        chosen = str(best["name"])
    else:
        log.warning("SLUG: no Pareto tensor reached forget exact match <= %.3g; raise max_expand or init_step", config.forget_threshold)
    if len(table):
        table["chosen"] = table["name"] == chosen
    return SlugResult(stats, table, chosen, edits, config)


__all__ = ["SlugConfig", "SlugResult", "StepSearch", "pareto_front", "search_step", "slug", "step_edit", "tensor_stats"]
