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
from typing import TYPE_CHECKING, Any, Sequence

import torch

from mechunlearn.core.edit import DeltaEdit
from mechunlearn.models.text import answer_nll, encode_qa, qa_batches
from mechunlearn.models.precision import resolve as resolve_precision
from mechunlearn.unlearn.loop import TrainConfig, fit
from mechunlearn.unlearn.losses import RMU, LossContext, make_loss, rmu_weights

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

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, lr=self.lr, weight_decay=self.weight_decay, seed=self.seed, autocast=self.autocast)


@contextmanager
def _originals(model: "Model", originals: dict[str, torch.Tensor], masks=None):
    """Temporarily put the original values back into the trained weights (the frozen reference)."""
    with model.restoring(list(originals), masks):
        model.set_weights(originals, masks)
        yield


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
) -> DeltaEdit:
    """Train ``config.loss`` on the target's forget (and retain) items; return the `DeltaEdit`.

    With ``mask``, only its selected entries change (and only its weights are trained).
    """
    loss = make_loss(config.loss, **config.loss_options)
    forget, retain = training_items(target, config.data)
    if not forget:
        raise ValueError(f"target {target.name!r} has no forget {config.data} to train on")
    names = _trained_weights(model, config, loss, mask)
    masks = {n: mask.masks[n] for n in names} if mask is not None else None
    with model.restoring(names, masks) as originals:
        ctx = LossContext(reference=lambda: _originals(model, originals, masks))
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
            from mechunlearn.world.target import seeded_subset

            checked = seeded_subset(forget, config.stop_items, config.seed)
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
