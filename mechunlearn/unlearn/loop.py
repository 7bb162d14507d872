"""The one training loop: builds the built-in models and runs every unlearning loss.

``fit`` optimises the chosen weights of a `Model` in place with AdamW and a warmup+cosine
schedule. With a mask, only the selected entries are optimised (gathered into small leaf
tensors that AdamW updates and that are scattered back after every step), so Δθ is exactly 0
outside the mask — weight decay and Adam momentum included — and the optimiser's state is the
size of the mask, not of the weights.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.models.precision import Precision, resolve
from mechunlearn.models.precision import normalise as normalise_autocast

if TYPE_CHECKING:
    from mechunlearn.core.selection import MaskSelection
    from mechunlearn.models.model import Model

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser settings of the one loop."""

    steps: int = 100
    """Number of optimiser steps (an upper bound when ``stop`` ends training early)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    warmup: int = 0
    """Linear warm-up steps before the peak rate."""
    schedule: str = "constant"
    """``constant`` or ``cosine`` (decay to ``min_lr_ratio`` × lr after warm-up)."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of ``lr`` for the cosine schedule."""
    grad_clip: float | None = 1.0
    """Clip the global gradient norm to this value (``None``: no clipping)."""
    seed: int = 0
    """Seed for torch's RNG during training (batch sampling uses its own generators)."""
    autocast: str | None = "auto"
    """``"auto"``: bfloat16 autocast where the hardware runs it fast, else float32 (decided by
    `mechunlearn.models.precision.resolve`: CUDA's bf16 support, the CPU's bf16 flags and a
    measured probe, cached). ``"bfloat16"``: mixed precision, the forward pass under
    ``torch.autocast`` (matmuls in bfloat16; weights, gradients and optimiser state in float32):
    2.4x cheaper bios-tiny steps on a CPU with AVX512-BF16, 2.5x dearer on one without.
    ``"float32"`` (or ``None``): plain float32. The resolved choice is in `TrainLog.precision`."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        normalise_autocast(self.autocast)
        if not 0 <= self.warmup < self.steps:
            raise ValueError(f"warmup must be in [0, steps), got {self.warmup} for {self.steps} steps")

    def lr_at(self, step: int) -> float:
        """Learning rate for 0-based ``step``."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        if self.schedule == "constant":
            return self.lr
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        floor = self.min_lr_ratio
        return self.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


@dataclass
class TrainLog:
    """What happened during `fit`: per-step losses and why it stopped."""

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    stopped_early: bool = False
    precision: Precision | None = None
    """The precision the steps ran in, and why (see `mechunlearn.models.precision`)."""


class _MaskedParam:
    """The masked entries of one parameter, trained as a small leaf tensor of their own.

    Only ``values`` (the selected entries) reach the optimiser, so AdamW's state is |mask|-sized
    and nothing outside the mask is ever written. The parameter's dense gradient lives only
    while backward passes through it: a post-accumulate hook gathers the masked entries and
    frees it, so a 1% mask on a large model does not hold a dense gradient per weight.
    """

    def __init__(self, param: torch.nn.Parameter, index: Tensor) -> None:
        self.param = param
        self.index = index
        self.values = param.detach().reshape(-1)[index].clone().requires_grad_(True)
        self.grad: Tensor | None = None
        self.hook = param.register_post_accumulate_grad_hook(self._take)

    def _take(self, param: Tensor) -> None:
        grad = param.grad.reshape(-1)[self.index]
        self.grad = grad if self.grad is None else self.grad + grad
        param.grad = None

    def collect(self) -> None:
        self.values.grad, self.grad = self.grad, None

    @torch.no_grad()
    def write(self) -> None:
        self.param.view(-1)[self.index] = self.values.detach()


def _masked_params(model: "Model", names: Sequence[str], mask: "MaskSelection") -> list[_MaskedParam]:
    """One `_MaskedParam` per underlying parameter: the storage offsets of its selected entries."""
    by_param: dict[int, tuple[torch.nn.Parameter, list[Tensor]]] = {}
    for name in names:
        spec = model.weight_spec(name)
        param = spec.param
        if not param.is_contiguous():
            raise ValueError(f"{name}: masked training needs a contiguous parameter")
        keep = mask.masks[name].to(param.device)
        offsets = spec.to_tl(torch.arange(param.numel(), device=param.device).view(param.shape))[keep]
        by_param.setdefault(id(param), (param, []))[1].append(offsets)
    return [_MaskedParam(p, torch.unique(torch.cat(parts))) for p, parts in by_param.values()]


def fit(
    model: "Model",
    loss_fn: Callable[[int], Tensor],
    cfg: TrainConfig,
    *,
    weights: Sequence[str] | None = None,
    mask: "MaskSelection | None" = None,
    stop: Callable[[int], bool] | None = None,
    stop_every: int = 10,
    desc: str = "train",
    extra: Sequence[Tensor] = (),
) -> TrainLog:
    """Minimise ``loss_fn(step)`` over the chosen weights of ``model``, in place.

    ``weights`` are TL weight names (default: every weight, or the mask's weights). ``mask``
    restricts the change to its selected entries: Δθ = 0 everywhere else, for every loss —
    weights in ``weights`` that the mask does not name are not trained at all. With a mask,
    gradient clipping sees the masked entries' gradient (the only one the optimiser uses).
    ``stop(step)`` is checked every ``stop_every`` steps (and after the last) for early
    stopping on a forget criterion. ``extra`` are leaf tensors trained alongside the weights
    (or, with ``weights=[]``, instead of them): the factors of a LoRA adapter that ``loss_fn``
    reaches through hooks.
    """
    names = list(weights) if weights is not None else (mask.names if mask is not None else model.weight_names())
    if mask is not None:
        unknown = [n for n in mask.names if n not in names]
        if unknown:
            raise ValueError(f"mask covers weights that are not trained: {unknown[:4]}")
        names = [n for n in names if n in mask.masks]
    specs = [model.weight_spec(n) for n in names]
    params: list[torch.nn.Parameter] = list({id(s.param): s.param for s in specs}.values())
    for p in params:
        p.requires_grad_(True)
    masked = _masked_params(model, names, mask) if mask is not None else []
    trained = ([m.values for m in masked] if mask is not None else params) + list(extra)
    if not trained:
        raise ValueError(f"{desc}: nothing to train (no weights, mask entries or extra tensors)")
    optimizer = torch.optim.AdamW(trained, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    precision = resolve(cfg.autocast, model.device)
    log_ = TrainLog(precision=precision)
    log.info("%s: %s (%s)", desc, precision.autocast, precision.reason)
    was_training = model.bridge.training
    model.bridge.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            bar = tqdm(range(cfg.steps), desc=desc, leave=False, mininterval=1.0)
            for step in bar:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr_at(step)
                optimizer.zero_grad(set_to_none=True)
                with precision.context():
                    loss = loss_fn(step)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{desc}: loss became {loss.item()} at step {step}; lower the learning rate or check the data"
                    )
                loss.backward()
                for m in masked:
                    m.collect()
                if cfg.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(trained, cfg.grad_clip)
                optimizer.step()
                for m in masked:
                    m.write()
                log_.losses.append(float(loss.detach()))
                log_.steps = step + 1
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{log_.losses[-1]:.4f}")
                if stop is not None and ((step + 1) % stop_every == 0 or step + 1 == cfg.steps):
                    model.bridge.eval()
                    done = stop(step)
                    model.bridge.train()
                    if done:
                        log_.stopped_early = step + 1 < cfg.steps
                        break
            bar.close()
    finally:
        for m in masked:
            m.hook.remove()
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        model.bridge.train(was_training)
    return log_
