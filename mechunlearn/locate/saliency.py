"""Per-weight scores for masked unlearning: SalUn saliency, WAGLE attribution and their ablations.

Every scorer is a frozen config registered in `LOCALIZERS`; ``locate(model, target)`` returns a
`MaskSelection` of *scores* (every weight still selected) and ``select(scores)`` keeps the top
``keep_ratio`` of them, globally or per tensor. Train under the mask with the one loop:

>>> wagle = WagleAttribution(gamma=1e-3, keep_ratio=0.5)
>>> mask = wagle.select(wagle.locate(model, target))
>>> edit = unlearn(model, target, UnlearnConfig(loss="npo"), mask=mask)

| name        | score per weight ``i``                  | needs        | paper                     |
| ----------- | --------------------------------------- | ------------ | ------------------------- |
| ``salun``   | ``|g_f,i|`` (the "gradient" ablation)   | g_f          | SalUn, Fan et al. 2024    |
| ``wagle``   | ``|(θ_i − g_r,i/γ) · g_f,i|``           | g_f, g_r     | WAGLE, Jia et al. 2024    |
| ``snip``    | ``|θ_i · g_f,i|``  (= WAGLE at γ → ∞)   | g_f          | SNIP, Lee et al. 2019     |
| ``magnitude``| ``|θ_i|``                              | —            |                           |
| ``random``  | uniform(0, 1), seeded                   | —            |                           |

**Gradients.** ``g_f`` and ``g_r`` are gradients at the unedited weights θ_o of the *mean* over
items of each item's summed answer NLL (the same per-item loss and the same mean the unlearning
losses use): ``g = ∇θ (1/N) Σ_i NLL_i``. They are accumulated over batches as the sum of the
per-batch gradients of ``Σ_{i∈batch} NLL_i / N``, so the result is the gradient of one loss over
all items whatever the batch size. SalUn writes ``|Σ_batches ∇ℓ_f|``; ours is that divided by the
constant N, which changes no ranking, and keeps WAGLE's γ independent of the forget-set size.

**Cost.** One forward+backward pass over the forget items (plus one over the retain items for
WAGLE): see ``benchmarks/saliency.py`` for the measured ratio to a plain pass.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, ClassVar, Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.selection import MaskSelection
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.models.text import answer_nll, qa_batches
from mechunlearn.world.target import seeded_subset  # noqa: F401 (part of this module's API)

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

DATA_CHOICES = ("items", "texts", "both")


def family_names(model: "Model", family: str | tuple[str, ...]) -> list[str]:
    """Weight names of a family (``no_embed``, ``matrices`` …) or of an explicit list, checked."""
    if isinstance(family, str):
        return model.weight_names(family)
    for n in family:
        model.weight_spec(n)
    return list(family)


# --------------------------------------------------------------------------- gradients
@dataclass(frozen=True)
class Gradients:
    """Forget and retain gradients at θ_o, in TransformerLens layout, one tensor per weight.

    ``forget[name] = ∇θ (1/N_f) Σ_i NLL_f,i`` (the gradient of the mean forget NLL; the forget
    *loss* −NLL_f of GA / SLUG has the opposite sign), likewise ``retain``.
    """

    forget: Mapping[str, Tensor]
    """Gradient of the mean forget NLL per weight name."""
    retain: Mapping[str, Tensor] | None
    """Gradient of the mean retain NLL per weight name (``None`` if not computed)."""
    n_forget: int
    """Number of forget items the gradient averages over."""
    n_retain: int
    """Number of retain items (0 if not computed)."""

    @property
    def names(self) -> list[str]:
        return list(self.forget)

    def require(self, names: Sequence[str], *, retain: bool) -> None:
        """Raise a clear error if these gradients cannot serve a scorer over ``names``."""
        missing = [n for n in names if n not in self.forget]
        if missing:
            raise ValueError(f"the given gradients lack weights {missing[:4]}; compute them over the scorer's family")
        if retain and self.retain is None:
            raise ValueError("this scorer needs retain gradients; compute them with gradients(..., retain=True)")


def _mean_nll_gradient(
    model: "Model", items: Sequence["Item"], names: Sequence[str], batch_size: int, desc: str, progress: bool
) -> dict[str, Tensor]:
    """``∇θ (1/N) Σ_i NLL_i`` for the named weights, accumulated over batches of ``items``."""
    specs = [model.weight_spec(n) for n in names]
    params = list({id(s.param): s.param for s in specs}.values())
    n = len(items)
    total = math.ceil(n / batch_size)
    was_training = model.bridge.training
    model.bridge.eval()
    for p in params:
        p.grad = None
        p.requires_grad_(True)
    try:
        for _, batch in tqdm(qa_batches(model, items, batch_size), total=total, desc=desc, leave=False, disable=not progress or total < 4):
            loss = answer_nll(model, batch).sum() / n
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: the answer NLL is {loss.item()}; check the items and the model's weights")
            loss.backward()
        out = {}
        for s in specs:
            grad = s.param.grad
            out[s.name] = torch.zeros(s.shape, device=s.param.device) if grad is None else s.to_tl(grad).detach().clone()
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        model.bridge.train(was_training)
    return out


def gradients(
    model: "Model",
    target: "Target",
    names: Sequence[str],
    *,
    data: str = "items",
    batch_size: int = 64,
    retain: bool = True,
    retain_items: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> Gradients:
    """One gradient pass at the current weights: ``g_f`` over the forget data and, if ``retain``,
    ``g_r`` over the retain data (a seeded subset of ``retain_items`` items when given).

    ``data`` picks what the NLLs are taken over, as in `UnlearnConfig.data`: question/answer
    ``items``, free ``texts`` (answer-only items) or ``both``. SalUn, WAGLE and SLUG share it.
    """
    from mechunlearn.unlearn.unlearner import training_items

    names = list(names)
    if not names:
        raise ValueError("no weights to take gradients of; give a family like 'no_embed' or weight names")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    forget_items, retain_pool = training_items(target, data)
    if not forget_items:
        raise ValueError(f"target {target.name!r} has no forget {data} to take gradients over")
    g_f = _mean_nll_gradient(model, forget_items, names, batch_size, "forget gradient", progress)
    g_r, n_r = None, 0
    if retain:
        if not retain_pool:
            raise ValueError(f"target {target.name!r} has no retain {data}; WAGLE and SLUG need retain data")
        retain_pool = seeded_subset(retain_pool, retain_items, seed)
        g_r = _mean_nll_gradient(model, retain_pool, names, batch_size, "retain gradient", progress)
        n_r = len(retain_pool)
    return Gradients(g_f, g_r, len(forget_items), n_r)


# --------------------------------------------------------------------------- scores
def gradient_saliency(g_f: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """SalUn: ``|g_f|``."""
    return g_f.abs()


def wagle_attribution(
    theta: Float[Tensor, "*shape"], g_f: Float[Tensor, "*shape"], g_r: Float[Tensor, "*shape"], gamma: float
) -> Float[Tensor, "*shape"]:
    """WAGLE: ``|(θ − g_r/γ) ⊙ g_f|`` (``γ = inf`` gives SNIP exactly)."""
    return ((theta - g_r / gamma) * g_f).abs()


def snip(theta: Float[Tensor, "*shape"], g_f: Float[Tensor, "*shape"]) -> Float[Tensor, "*shape"]:
    """SNIP connection sensitivity: ``|θ ⊙ g_f|``."""
    return (theta * g_f).abs()


@dataclass(frozen=True)
class WeightScore:
    """Base of the per-weight scorers: which weights, how the mask is taken, which data."""

    family: str | tuple[str, ...] = "no_embed"
    """Weights scored: a family (``all``, ``mlp``, ``attn``, ``no_embed`` = blocks without norms,
    ``matrices`` = attention and MLP matrices) or explicit TL weight names. The default matches
    `UnlearnConfig.weights`, so the mask can be trained as is."""
    keep_ratio: float = 0.5
    """Fraction of the scored weights that ``select`` keeps (SalUn's default 0.5)."""
    per_tensor: bool = False
    """Rank within each weight tensor (``True``) instead of globally over all scored weights."""
    data: str = "items"
    """Forget/retain data of the gradients: ``items``, ``texts`` or ``both`` (see `gradients`)."""
    batch_size: int = 64
    """Items per forward/backward batch (does not change the scores)."""

    needs_forget: ClassVar[bool] = True
    needs_retain: ClassVar[bool] = False
    name: ClassVar[str] = "score"

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_ratio <= 1.0:
            raise ValueError(f"keep_ratio must be in (0, 1], got {self.keep_ratio}")
        if self.data not in DATA_CHOICES:
            raise ValueError(f"data must be one of {DATA_CHOICES}, got {self.data!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not isinstance(self.family, str):
            object.__setattr__(self, "family", tuple(self.family))
            if not self.family:
                raise ValueError("family is an empty list of weight names; give names or a family like 'no_embed'")

    def weight_names(self, model: "Model") -> list[str]:
        """The scored weights' names on ``model`` (unknown names raise with a list of what exists)."""
        return family_names(model, self.family)

    def gradients(self, model: "Model", target: "Target", *, progress: bool = True) -> Gradients:
        """The gradients this scorer needs (see `gradients`)."""
        return gradients(model, target, self.weight_names(model), data=self.data, batch_size=self.batch_size, retain=self.needs_retain, progress=progress, **self._retain_options())

    def _retain_options(self) -> dict:
        return {}

    def score(self, name: str, theta: Tensor, grads: Gradients | None, index: int = 0) -> Tensor:
        """The score tensor of weight ``name`` (the ``index``-th scored one), shaped like it."""
        raise NotImplementedError

    def locate(self, model: "Model", target: "Target", *, grads: Gradients | None = None, progress: bool = True) -> MaskSelection:
        """Per-weight scores as a `MaskSelection` (everything selected; see `select`).

        Pass ``grads`` (from `gradients` over a superset of the weights, with retain gradients
        for WAGLE) to share one gradient pass between several scorers.
        """
        names = self.weight_names(model)
        if self.needs_forget or self.needs_retain:
            if grads is None:
                grads = self.gradients(model, target, progress=progress)
            grads.require(names, retain=self.needs_retain)
        scores = {}
        with torch.no_grad():
            for i, n in enumerate(names):
                scores[n] = self.score(n, model.weight(n).detach(), grads, index=i).float()
        meta = {"localizer": self.name, "config": asdict(self), "keep_ratio": self.keep_ratio, "per_tensor": self.per_tensor}
        if grads is not None:
            meta.update(n_forget=grads.n_forget, n_retain=grads.n_retain)
        return MaskSelection(scores, None, meta)

    def select(self, scores: MaskSelection) -> MaskSelection:
        """The mask: the top ``keep_ratio`` of ``scores``, globally or per tensor."""
        return scores.frac(self.keep_ratio, per_tensor=self.per_tensor)

    def mask(self, model: "Model", target: "Target", *, grads: Gradients | None = None, progress: bool = True) -> MaskSelection:
        """``select(locate(...))`` in one call."""
        return self.select(self.locate(model, target, grads=grads, progress=progress))


@LOCALIZERS.register("salun")
@dataclass(frozen=True)
class SalUnSaliency(WeightScore):
    """SalUn gradient saliency ``|g_f|`` (also the "gradient" mask of WAGLE's ablation)."""

    name: ClassVar[str] = "salun"

    def score(self, name, theta, grads, index=0):
        return gradient_saliency(grads.forget[name])


@LOCALIZERS.register("wagle")
@dataclass(frozen=True)
class WagleAttribution(WeightScore):
    """WAGLE weight attribution ``|(θ − g_r/γ) ⊙ g_f|`` (diagonal-Hessian bi-level attribution)."""

    gamma: float = 1e-3
    """γ of the diagonal Hessian approximation γI (public code default 1e-3; configs use 1e-6).
    Large γ trusts the weights' magnitude (γ = inf is SNIP); small γ the retain gradient."""
    retain_items: int | None = None
    """Retain items for g_r: a seeded random subset of this size (``None``: all of them)."""
    seed: int = 0
    """Seed of the retain subset."""

    needs_retain: ClassVar[bool] = True
    name: ClassVar[str] = "wagle"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0 (float('inf') gives SNIP), got {self.gamma}")

    def _retain_options(self) -> dict:
        return {"retain_items": self.retain_items, "seed": self.seed}

    def score(self, name, theta, grads, index=0):
        return wagle_attribution(theta, grads.forget[name], grads.retain[name], self.gamma)


@LOCALIZERS.register("snip")
@dataclass(frozen=True)
class SnipScore(WeightScore):
    """SNIP connection sensitivity ``|θ ⊙ g_f|``."""

    name: ClassVar[str] = "snip"

    def score(self, name, theta, grads, index=0):
        return snip(theta, grads.forget[name])


@LOCALIZERS.register("magnitude")
@dataclass(frozen=True)
class MagnitudeScore(WeightScore):
    """Weight magnitude ``|θ|`` (no gradient)."""

    needs_forget: ClassVar[bool] = False
    name: ClassVar[str] = "magnitude"

    def score(self, name, theta, grads, index=0):
        return theta.abs()


@LOCALIZERS.register("random")
@dataclass(frozen=True)
class RandomScore(WeightScore):
    """Uniform random scores, seeded per weight (the chance baseline at the same ratio)."""

    seed: int = 0
    """Seed; the ``index``-th scored weight uses ``seed + index``, so a weight's scores do not
    depend on which other weights are scored after it."""

    needs_forget: ClassVar[bool] = False
    name: ClassVar[str] = "random"

    def score(self, name, theta, grads, index=0):
        gen = torch.Generator().manual_seed(self.seed + index)
        return torch.rand(theta.shape, generator=gen)


def score_all(
    model: "Model", target: "Target", scorers: Mapping[str, WeightScore], *, progress: bool = True
) -> dict[str, MaskSelection]:
    """Scores of several scorers with one shared gradient pass (over the union of their weights).

    Scorers that differ in ``data`` or in their retain subset need different gradients; this
    raises instead of silently mixing them.
    """
    if not scorers:
        raise ValueError("no scorers given")
    needing = [s for s in scorers.values() if s.needs_forget or s.needs_retain]
    grads = None
    if needing:
        datas = {s.data for s in needing}
        retains = {tuple(sorted(s._retain_options().items())) for s in needing if s.needs_retain}
        if len(datas) > 1 or len(retains) > 1:
            raise ValueError("score_all shares one gradient pass: give the scorers the same data and retain_items/seed")
        names = list(dict.fromkeys(n for s in needing for n in s.weight_names(model)))
        opts = dict(next(iter(retains))) if retains else {}
        grads = gradients(
            model, target, names, data=needing[0].data, batch_size=needing[0].batch_size,
            retain=bool(retains), progress=progress, **opts,
        )
    return {key: s.locate(model, target, grads=grads) for key, s in scorers.items()}


__all__ = [
    "Gradients",
    "MagnitudeScore",
    "RandomScore",
    "SalUnSaliency",
    "SnipScore",
    "WagleAttribution",
    "WeightScore",
    "gradient_saliency",
    "gradients",
    "score_all",
    "seeded_subset",
    "snip",
    "wagle_attribution",
]
