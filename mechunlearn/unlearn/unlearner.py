"""`unlearn`: run a loss through the one loop and return the change as a `DeltaEdit`.

The model is trained in place, the delta (new − original, TL layout) is recorded, and the
original weights are restored bit for bit, so the caller decides when the edit is applied:

>>> edit = unlearn(model, target, UnlearnConfig(loss="npo", steps=60))
>>> with edit.applied(model):
...     behavior(model, target)
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from mechunlearn.core.edit import DeltaEdit
from mechunlearn.models.text import answer_nll, encode_qa, qa_batches
from mechunlearn.models.precision import resolve as resolve_precision
from mechunlearn.unlearn.loop import TrainConfig, fit
from mechunlearn.unlearn.losses import LOSSES, RMU, LossContext, make_loss, rmu_weights

if TYPE_CHECKING:
    from mechunlearn.core.selection import MaskSelection
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UnlearnConfig:
    """One unlearning run: the loss, what is trained, and the loop's settings."""

    loss: str = "graddiff"
    """Registered loss name: ga, graddiff, npo, simnpo, forget_prob, rmu."""
    loss_options: dict[str, Any] = field(default_factory=dict)
    """Options of the loss (e.g. ``{"beta": 0.1, "retain_weight": 1.0}``)."""
    data: str = "items"
    """What the losses train on: ``items`` (question/answer pairs), ``texts`` (the target's free
    texts, e.g. bios or concept texts, as answer-only items) or ``both``."""
    weights: str | tuple[str, ...] = "no_embed"
    """Weight family (all, mlp, attn, no_embed, matrices) or explicit weight names. RMU defaults
    to its own layers' ``W_out``."""
    steps: int = 60
    """Maximum optimiser steps."""
    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay (masked runs keep Δθ = 0 outside the mask regardless)."""
    batch_size: int = 32
    """Forget items per step (and as many retain items)."""
    stop_forget_em: float | None = 0.0
    """Stop early once forget exact match ≤ this (checked every ``stop_every`` steps); None: never."""
    stop_every: int = 10
    """How often the early-stopping criterion is evaluated."""
    stop_items: int | None = None
    """Forget items the early-stopping check scores: a seeded subset of this many (each check
    is a full scoring pass, which on bios-tiny's 2,400 forget questions costs more than the
    training steps between checks); None: every forget item."""
    seed: int = 0
    """Seed of batch sampling and of the loop."""
    autocast: str | None = "auto"
    """Precision of the training forward passes (``auto``, ``bfloat16``, ``float32``; see
    `TrainConfig.autocast`); NPO's reference NLLs are computed in the same precision."""

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; registered: {', '.join(sorted(LOSSES))}")
        if self.data not in ("items", "texts", "both"):
            raise ValueError(f"data must be 'items', 'texts' or 'both', got {self.data!r}")
        if not isinstance(self.weights, str) and (not self.weights or not all(isinstance(w, str) for w in self.weights)):
            raise ValueError(f"weights must be a family name (all, mlp, attn, no_embed, matrices) or a non-empty tuple of weight names, got {self.weights!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.stop_every < 1:
            raise ValueError(f"stop_every must be >= 1, got {self.stop_every}")
        if self.stop_items is not None and self.stop_items < 1:
            raise ValueError(f"stop_items must be >= 1 or None (every forget question), got {self.stop_items}")
        if self.stop_forget_em is not None and not 0 <= self.stop_forget_em <= 1:
            raise ValueError(f"stop_forget_em is an exact-match level in [0, 1] (or None: never stop early), got {self.stop_forget_em}")
        self.train_config()  # steps, lr, autocast

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, autocast=self.autocast)


@contextmanager
def _originals(model: "Model", originals: dict[str, torch.Tensor], masks=None):
    """Temporarily put the original values back into the trained weights (the frozen reference).

    Inside one autocast region torch caches its casts of the weights (by tensor, not by value), so
    a forward after the swap would reuse the casts made before it: the reference would read the
    trained values, or the next forward the original ones. The cache is cleared on both sides of
    the swap (a no-op without autocast)."""
    torch.clear_autocast_cache()
    try:
        with model.restoring(list(originals), masks):
            model.set_weights(originals, masks)
            yield
    finally:
        torch.clear_autocast_cache()


@torch.no_grad()
def reference_nll(model: "Model", items: Sequence["Item"], batch_size: int = 128) -> torch.Tensor:
    """Summed answer NLL of each item under the current weights (π_ref, computed once)."""
    return torch.cat([answer_nll(model, batch).cpu() for _, batch in qa_batches(model, items, batch_size)])


def forget_exact_match(model: "Model", items: Sequence["Item"]) -> float:
    """Mean greedy exact match over items (the early-stopping criterion)."""
    from mechunlearn.verify.behavior import score_items

    return float(score_items(model, items, progress=False)["exact_match"].mean())


def training_items(target: "Target", data: str) -> tuple[list["Item"], list["Item"]]:
    """Forget and retain training items: QA items, free texts as answer-only items, or both."""
    from mechunlearn.world.target import Item

    if data not in ("items", "texts", "both"):
        raise ValueError(f"data must be 'items', 'texts' or 'both', got {data!r}")
    forget: list[Item] = []
    retain: list[Item] = []
    if data in ("items", "both"):
        forget += target.forget
        retain += target.retain
    if data in ("texts", "both"):
        forget += [Item("", t) for t in target.forget_texts]
        retain += [Item("", t) for t in target.retain_texts]
    return forget, retain


def unlearn(
    model: "Model",
    target: "Target",
    config: UnlearnConfig = UnlearnConfig(),
    *,
    mask: "MaskSelection | None" = None,
    init: "Callable[[Model, dict[str, torch.Tensor]], None] | None" = None,
) -> DeltaEdit:
    """Train ``config.loss`` on the target's forget (and retain) items; return the `DeltaEdit`.

    With ``mask``, only its selected entries change (and only its weights are trained).
    ``init(model, originals)`` (no masks) sets the trained weights' starting values after the
    originals are snapshotted: the frozen reference (``LossContext.reference``) and the recorded
    delta stay relative to the originals (UNDO's noised student, `mechunlearn.unlearn.undo`).
    """
    if init is not None and mask is not None:
        raise ValueError("unlearn: init (a new starting point) and mask cannot be combined")
    loss = make_loss(config.loss, **config.loss_options)
    forget, retain = training_items(target, config.data)
    if not forget:
        raise ValueError(f"target {target.name!r} has no forget {config.data} to train on")
    if loss.retain_weight and not retain:
        raise ValueError(
            f"loss {config.loss!r} weights a retain term by {loss.retain_weight}, but target {target.name!r} has no retain "
            f"{config.data} (data={config.data!r}); give the target retain data, use data='items' or 'both', or pass "
            "loss_options={'retain_weight': 0.0} to train the forget term alone"
        )
    names = _trained_weights(model, config, loss, mask)
    masks = {n: mask.masks[n] for n in names} if mask is not None else None
    with model.restoring(names, masks) as originals:
        ctx = LossContext(reference=lambda: _originals(model, originals, masks))
        if init is not None:
            with torch.no_grad():
                init(model, originals)
        precision = resolve_precision(config.autocast, model.device)
        if loss.needs_ref:
            with precision.context():
                ref = reference_nll(model, forget)
            ctx.ref_nll = lambda idx: ref[idx]
        gen = torch.Generator().manual_seed(config.seed)

        def step_loss(step: int) -> torch.Tensor:
            idx = torch.randint(0, len(forget), (min(config.batch_size, len(forget)),), generator=gen).tolist()
            fb = encode_qa(model, [forget[i].prompt for i in idx], [forget[i].answer for i in idx])
            rb = None
            if retain and loss.retain_weight:
                ridx = torch.randint(0, len(retain), (config.batch_size,), generator=gen).tolist()
                rb = encode_qa(model, [retain[i].prompt for i in ridx], [retain[i].answer for i in ridx])
            return loss(model, fb, idx, rb, ctx)

        stop = None
        if config.stop_forget_em is not None:
            checked = _stop_items(target, config)
            stop = lambda step: forget_exact_match(model, checked) <= config.stop_forget_em  # noqa: E731
        train_log = fit(model, step_loss, config.train_config(), weights=names, mask=mask, stop=stop, stop_every=config.stop_every, desc=f"unlearn {config.loss}")
        if masks is None:
            deltas = {n: (model.weight(n).detach() - originals[n]) for n in names}
        else:  # only the masked entries: a 1% mask keeps 1% of the weights' size
            deltas = {n: (model.weight(n).detach()[masks[n].to(model.device)] - originals[n]) for n in names}
    meta = {"config": config, "steps": train_log.steps, "stopped_early": train_log.stopped_early, "losses": train_log.losses,
            "precision": train_log.precision.record()}
    if mask is not None and set(deltas) != set(mask.names):
        mask = mask.where(lambda n: n in deltas)
    return DeltaEdit(deltas, mask, label=config.loss, meta=meta)


def _stop_items(target: "Target", config: UnlearnConfig) -> list["Item"]:
    """What the early stop scores: the target's forget *questions*, whatever ``data`` trains on
    (the exact match of a free text would be its verbatim reproduction, which a real model
    loses within a few steps while it still answers every question)."""
    from mechunlearn.world.target import seeded_subset

    questions = [item for item in target.forget if item.prompt]
    if not questions:
        raise ValueError(
            f"stop_forget_em={config.stop_forget_em} scores the target's forget questions, but target {target.name!r} has "
            "none (only texts); set stop_forget_em=None and choose the number of steps"
        )
    if config.data != "items":
        log.info("early stop scores %d forget questions (training uses data=%r)", len(questions), config.data)
    return seeded_subset(questions, config.stop_items, config.seed)


def _trained_weights(model: "Model", config: UnlearnConfig, loss, mask: "MaskSelection | None") -> list[str]:
    """The weights the loss trains. With a mask, the mask decides (Δθ = 0 outside it, for every
    loss); explicit ``config.weights`` then narrow it further."""
    if mask is not None:
        if config.weights == UnlearnConfig.weights:
            return list(mask.names)
        wanted = set(model.weight_names(config.weights) if isinstance(config.weights, str) else config.weights)
        names = [n for n in mask.names if n in wanted]
        if not names:
            raise ValueError(f"the mask covers none of the weights {config.weights!r}; drop `weights` or use a mask over them")
        return names
    if isinstance(loss, RMU) and config.weights == UnlearnConfig.weights:
        return rmu_weights(loss.layer)
    if isinstance(config.weights, str):
        return model.weight_names(config.weights)
    return list(config.weights)
