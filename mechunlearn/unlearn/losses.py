"""Unlearning losses for the one loop. Each is a frozen config dataclass registered by name.

Notation (METHODS.md): NLL is the *summed* negative log-likelihood of an item's answer tokens;
batch losses are means over items. π_ref is the model before the edit; its NLLs are computed
once per item before training (`LossContext.ref_nll`).

| name        | forget term                                          | retain term         |
| ----------- | ---------------------------------------------------- | ------------------- |
| ``ga``      | −NLL_f                                               | —                   |
| ``graddiff``| −NLL_f                                               | + λ·NLL_r           |
| ``npo``     | −(2/β)·log σ(β·(NLL_θ − NLL_ref))   (Zhang et al. 2024) | + λ·NLL_r (λ=0 default) |
| ``simnpo``  | −(2/β)·log σ(β·NLL_θ/|y| − γ)      (Fan et al. 2024)  | + λ·NLL_r           |
| ``forget_prob`` | −log(1 − p(answer))            (Guo et al. 2024)  | + λ·NLL_r           |
| ``rmu``     | ‖h_f − c·u‖² at layer ℓ             (Li et al. 2024)  | + α·‖h_r − h_r^ref‖² |
| ``distill`` | w_f·KL(π_ref ‖ π_θ) on forget text  (UNDO, 2506.06278) | + λ·KL(π_ref ‖ π_θ) on retain text |

SimNPO's paper writes σ(−(β/|y|)·log π_θ − γ); with log π_θ = −NLL that is σ(β·NLL/|y| − γ),
which is what we implement (METHODS.md's shorthand flips the sign of "NLL").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from mechunlearn.core.edit import HookEdit
from mechunlearn.core.registry import Registry
from mechunlearn.models.text import QABatch, answer_nll

if TYPE_CHECKING:
    from mechunlearn.models.model import Model

LOSSES: Registry[type] = Registry("loss")


@dataclass
class LossContext:
    """What a loss may read besides the batches: reference NLLs, a way to run the frozen model."""

    ref_nll: Callable[[list[int]], Tensor] | None = None
    """NLL_ref for forget items by their indices (precomputed before training)."""
    reference: Callable[[], object] | None = None
    """Context manager factory: inside it, the trained weights hold their original values."""
    state: dict = field(default_factory=dict)
    """Per-run scratch space (e.g. RMU's random direction)."""


@dataclass(frozen=True)
class Loss:
    """Base: ``forget_term`` plus ``retain_weight`` × mean retain NLL (if the weight is non-zero)."""

    retain_weight: float = 0.0
    """λ: weight of the retain NLL term (0 disables it)."""
    needs_ref: bool = field(default=False, init=False)

    def forget_term(self, model: "Model", forget: QABatch, idx: list[int], ctx: LossContext) -> Tensor:
        raise NotImplementedError

    def __call__(self, model: "Model", forget: QABatch, idx: list[int], retain: QABatch | None, ctx: LossContext) -> Tensor:
        loss = self.forget_term(model, forget, idx, ctx)
        if self.retain_weight and retain is not None:
            loss = loss + self.retain_weight * self.retain_term(model, retain, ctx)
        return loss

    def retain_term(self, model: "Model", retain: QABatch, ctx: LossContext) -> Tensor:
        return answer_nll(model, retain).mean()


@LOSSES.register("ga")
@dataclass(frozen=True)
class GradientAscent(Loss):
    """Gradient ascent on the forget answers: minimise −NLL_f."""

    def forget_term(self, model, forget, idx, ctx):
        return -answer_nll(model, forget).mean()


@LOSSES.register("graddiff")
@dataclass(frozen=True)
class GradDiff(Loss):
    """Gradient difference: −NLL_f + λ·NLL_r."""

    retain_weight: float = 1.0
    """λ: weight of the retain NLL term."""

    def forget_term(self, model, forget, idx, ctx):
        return -answer_nll(model, forget).mean()


@LOSSES.register("npo")
@dataclass(frozen=True)
class NPO(Loss):
    """Negative preference optimisation: −(2/β)·E_f log σ(β·(NLL_θ − NLL_ref))."""

    beta: float = 0.1
    """β, the inverse temperature (0.1 in the paper)."""
    needs_ref: bool = field(default=True, init=False)

    def forget_term(self, model, forget, idx, ctx):
        if ctx.ref_nll is None:
            raise RuntimeError("NPO needs reference NLLs; run it through mechunlearn.unlearn.unlearn()")
        nll = answer_nll(model, forget)
        ref = ctx.ref_nll(idx).to(nll)
        return -(2.0 / self.beta) * F.logsigmoid(self.beta * (nll - ref)).mean()


@LOSSES.register("simnpo")
@dataclass(frozen=True)
class SimNPO(Loss):
    """Reference-free NPO with length normalisation: −(2/β)·E_f log σ(β·NLL_θ/|y| − γ)."""

    beta: float = 2.5
    """β (2.5 on TOFU in the paper)."""
    gamma: float = 0.0
    """Reward margin γ (0 on TOFU)."""
    retain_weight: float = 1.0
    """λ: weight of the retain NLL term."""

    def forget_term(self, model, forget, idx, ctx):
        nll = answer_nll(model, forget) / forget.answer_lengths.clamp_min(1).to(torch.float32)
        return -(2.0 / self.beta) * F.logsigmoid(self.beta * nll - self.gamma).mean()


@LOSSES.register("forget_prob")
@dataclass(frozen=True)
class ForgetProb(Loss):
    """Mechanistic Unlearning's forget loss −log(1 − p(answer)), plus λ·NLL_r."""

    retain_weight: float = 1.0
    """λ: weight of the retain NLL term."""

    def forget_term(self, model, forget, idx, ctx):
        nll = answer_nll(model, forget)
        # log(1 - exp(-nll)) computed stably; clamp keeps p = 1 finite
        return -torch.log(-torch.expm1(-nll.clamp_min(1e-6))).mean()


@LOSSES.register("rmu")
@dataclass(frozen=True)
class RMU(Loss):
    """Representation misdirection: push forget activations at ``blocks.{layer}.hook_resid_post``
    to c·u (u a fixed random unit vector), keep retain activations at the frozen model's.

    Train only ``W_out`` of layers ``layer-2 .. layer`` (see `rmu_weights`). The paper's c = 20
    is for 7B models; ``c_scale`` multiplies the mean residual norm at the layer instead.
    """

    layer: int = 2
    """ℓ: the residual stream site whose activations are steered."""
    c_scale: float = 4.0
    """c as a multiple of the mean residual norm at ℓ on forget inputs (measured once, on the
    first batch, BOS positions excluded)."""
    alpha: float = 100.0
    """α: weight of the retain activation-matching term."""
    seed: int = 0
    """Seed of the random direction u."""
    retain_weight: float = 1.0
    """Here: whether to use the retain term at all (non-zero: α-weighted MSE)."""

    def _resid(self, model: "Model", batch: QABatch) -> Tensor:
        store: dict[str, Tensor] = {}

        def grab(act, hook):
            store["act"] = act

        with HookEdit(f"blocks.{self.layer}.hook_resid_post", grab, label="rmu-read").applied(model):
            model.forward(batch.tokens)
        return store["act"]

    def forget_term(self, model, forget, idx, ctx):
        act = self._resid(model, forget)
        mask = forget.attention_mask.to(act.device)
        if "target" not in ctx.state:
            gen = torch.Generator().manual_seed(self.seed)
            u = torch.rand(act.shape[-1], generator=gen).to(act.device)
            u = u / u.norm()
            # the scale leaves BOS out: its residual norm is an outlier on real models
            content = mask.clone()
            if model.prepend_bos:
                content[:, 0] = False
            scale = act.detach()[content].norm(dim=-1).mean()
            ctx.state["target"] = (self.c_scale * scale * u).to(act)
        diff = (act - ctx.state["target"]).pow(2).mean(-1)
        return (diff * mask).sum() / mask.sum()

    def __call__(self, model, forget, idx, retain, ctx):
        if not (self.retain_weight and retain is not None):
            return self.forget_term(model, forget, idx, ctx)
        if ctx.reference is None:
            raise RuntimeError("RMU needs the frozen model; run it through mechunlearn.unlearn.unlearn()")
        # Frozen activations first: swapping weights in place after a graph exists would break autograd.
        with torch.no_grad(), ctx.reference():
            ref = self._resid(model, retain).detach()
        act = self._resid(model, retain)
        mask = retain.attention_mask.to(act.device)
        retain_mse = ((act - ref).pow(2).mean(-1) * mask).sum() / mask.sum()
        return self.forget_term(model, forget, idx, ctx) + self.retain_weight * self.alpha * retain_mse


def _kl_to_reference(model: "Model", batch: QABatch, ctx: LossContext) -> Tensor:
    """Mean over non-pad positions of KL(π_ref(·|x<t) ‖ π_θ(·|x<t)) over the full vocabulary: the
    frozen model's (teacher's) next-token distribution distilled into the trained one."""
    if ctx.reference is None:
        raise RuntimeError("distill needs the frozen teacher; run it through mechunlearn.unlearn.unlearn()")
    with torch.no_grad(), ctx.reference():
        teacher = F.log_softmax(model.forward(batch.tokens).float(), dim=-1).detach()
    student = F.log_softmax(model.forward(batch.tokens).float(), dim=-1)
    kl = (teacher.exp() * (teacher - student)).sum(-1)
    mask = batch.attention_mask.to(kl.device).to(kl.dtype)
    return (kl * mask).sum() / mask.sum().clamp_min(1)


@LOSSES.register("distill")
@dataclass(frozen=True)
class Distill(Loss):
    """Distillation to the frozen model π_ref (the teacher): λ·KL on retain text plus
    ``forget_weight``·KL on forget text, token-level forward KL over the full vocabulary.

    UNDO's distillation step (Lee et al. 2025, arXiv 2506.06278, "Distillation Robustifies
    Unlearning") distils the *unlearned* model's outputs into a noised copy of it; the paper
    distils on the retain / pretraining data, which is our default (``forget_weight=0``).
    `mechunlearn.unlearn.undo` sets this up: the teacher is the unlearned model, the student starts
    from the noised copy (`unlearn`'s ``init``)."""

    retain_weight: float = 1.0
    """λ: weight of the KL on retain text."""
    forget_weight: float = 0.0
    """Weight of the KL on forget text (0: retain text only, as in the paper)."""

    def __call__(self, model, forget, idx, retain, ctx):
        loss = torch.zeros((), device=model.device)
        if self.forget_weight:
            loss = loss + self.forget_weight * _kl_to_reference(model, forget, ctx)
        if self.retain_weight and retain is not None:
            loss = loss + self.retain_weight * _kl_to_reference(model, retain, ctx)
        if not (self.forget_weight or (self.retain_weight and retain is not None)):
            raise ValueError("distill: both KL terms are off (forget_weight=0 and no retain term); nothing to distil")
        return loss


def rmu_weights(layer: int) -> list[str]:
    """The weights RMU trains: ``W_out`` of layers ``layer-2 .. layer``."""
    return [f"blocks.{l}.mlp.W_out" for l in range(max(0, layer - 2), layer + 1)]


def make_loss(name: str, **options) -> Loss:
    """Build a registered loss by name with its options (clear errors on unknown options)."""
    cls = LOSSES.get(name)
    try:
        return cls(**options)
    except TypeError as err:
        fields = [f for f in cls.__dataclass_fields__ if f != "needs_ref"]
        raise TypeError(f"loss {name!r} takes options {fields}: {err}") from None
