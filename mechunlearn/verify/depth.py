"""Patching depth: how much of the forget knowledge an edit took out of the hidden states, layer by
layer, measured against the exact-unlearning oracle (the retain model) — a UDS-style score
(Unlearning Depth Score, arXiv 2605.24614) — and the logit lens's reading of the answer per layer.

**Stage 1 (original, oracle).** For each layer l, run the original model on the forget items with
its residual stream ``blocks.l.hook_resid_post`` replaced, at every position, by the oracle's
hidden states on the same tokens. The drop in the answer's log-probability

    Δ_l(oracle) = log p_orig(answer) − log p_{orig ← oracle@l}(answer)

is the forget knowledge that the original's states hold at layer l and a model that never learned
the facts lacks (the original's later layers cannot put it back). Layers with
Δ_l(oracle) ≥ ``min_signal`` are the *knowledge layers*. Stage 1 depends on the original and the
oracle only: it is memoised by both models' weights (`mechunlearn.core.memo`), so a study computes
it once per process.

**Stage 2 (each edit).** The same patching with the edited model's states gives Δ_l(edited); the
share of the knowledge removed at layer l is

    depth_l = clip(Δ_l(edited) / Δ_l(oracle), 0, 1)

and ``depth_score`` is the Δ_l(oracle)-weighted mean of depth_l over the knowledge layers:
1 — the edited states are as free of the facts as the oracle's wherever the original held them
(removed); 0 — they still carry the facts, and the edit changed only what is read out after them
(hidden). Patching every position runs the source model's layers 0…l and then the original's
layers l+1…L: it asks what the original makes of the source's representation.

log p is the mean log-probability of an item's answer tokens, averaged over items.

**Logit lens.** Each role's residual stream at every layer, through the model's own final norm
and unembedding: ``lens_logprob`` (mean log-probability of the answer tokens) and ``lens_top1``
(share of answer tokens that are the lens's argmax) — where in depth the answer becomes readable.

Rows: ``metric`` (``patch_drop`` per source role and layer; ``patch_depth`` per edited role and
knowledge layer; ``depth_score`` per edited role, layer NaN; ``lens_logprob`` / ``lens_top1`` per
role and layer), ``model`` (the role), ``layer``, ``split`` (forget), ``value``, ``n_items``,
``knowledge_layer``.

>>> patching_depth({"original": model, "retain": oracle, "edited": (model, edit)}, target).frame
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from mechunlearn.core.edit import HookEdit
from mechunlearn.core.memo import by_weights
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import ModelLike, model_of, using
from mechunlearn.models.model import Model
from mechunlearn.models.text import qa_batches, token_logprobs
from mechunlearn.world.target import seeded_subset

if TYPE_CHECKING:
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

SITE = "blocks.{layer}.hook_resid_post"


@dataclass(frozen=True)
class DepthConfig:
    """Settings of `patching_depth`."""

    layers: tuple[int, ...] | None = None
    """Layers patched and read by the lens (None: every layer)."""
    min_signal: float = 0.1
    """A layer is a knowledge layer when the oracle's states lower the original's mean answer
    log-probability by at least this (nats)."""
    max_items: int | None = 200
    """Forget items scored (a seeded subset of the trained-template items; None: all)."""
    paraphrase: str | None = "trained"
    """Forget items of this paraphrase kind only (None: every item)."""
    batch_size: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.min_signal > 0:
            raise ValueError(f"min_signal must be > 0 nats, got {self.min_signal}")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {self.max_items}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


def depth_items(target: "Target", config: DepthConfig) -> tuple["Item", ...]:
    """The forget items scored: the paraphrase kind, then a seeded subset of ``max_items``."""
    items = [it for it in target.forget if config.paraphrase is None or it.paraphrase == config.paraphrase]
    if not items:
        raise ValueError(f"target {target.name!r} has no forget items with paraphrase {config.paraphrase!r}; set DepthConfig(paraphrase=None)")
    return tuple(seeded_subset(items, config.max_items, config.seed))


def _layers(model: "Model", config: DepthConfig) -> list[int]:
    layers = list(range(model.n_layers)) if config.layers is None else list(config.layers)
    bad = [l for l in layers if not 0 <= l < model.n_layers]
    if bad or not layers:
        raise ValueError(f"layers must be some of 0..{model.n_layers - 1}, got {config.layers}")
    return layers


def _answer_logprob(logits: Tensor, batch) -> Tensor:
    """Mean log-probability of each row's answer tokens."""
    lp = token_logprobs(logits, batch.targets)
    mask = batch.answer_mask.to(lp.device)
    return ((lp * mask).sum(-1) / mask.sum(-1).clamp_min(1)).cpu()


@torch.no_grad()
def _patched(original: "Model", source: ModelLike, items: Sequence["Item"], layers: Sequence[int], batch_size: int) -> Tensor:
    """``[len(layers), n_items]``: the original's answer log-probability with its residual stream at
    each layer replaced by ``source``'s (a `Model`, or the original with an edit: applied while its
    states are read, one batch at a time, and reverted before the original runs)."""
    names = [SITE.format(layer=l) for l in layers]
    rows = []
    for _, batch in qa_batches(original, items, batch_size):
        tokens = batch.tokens.to(original.device)
        with using(source) as model:
            _, states = model.run_with_cache(tokens.to(model.device), names)
        per_layer = []
        for name in names:
            with HookEdit(name, lambda act, hook, s=states[name]: s.to(act), label="patch").applied(original):
                per_layer.append(_answer_logprob(original.forward(tokens), batch))
        rows.append(torch.stack(per_layer))
    return torch.cat(rows, dim=1)


@torch.no_grad()
def _clean(original: "Model", items: Sequence["Item"], batch_size: int) -> Tensor:
    """The original's answer log-probability per item, unpatched."""
    return torch.cat([_answer_logprob(original.forward(b.tokens.to(original.device)), b) for _, b in qa_batches(original, items, batch_size)])


@by_weights
def oracle_drops(original: "Model", oracle: "Model", items: tuple["Item", ...], layers: tuple[int, ...], batch_size: int) -> tuple[Tensor, Tensor]:
    """Stage 1: the original's clean answer log-probabilities ``[n_items]`` and those with the
    oracle's states patched in ``[len(layers), n_items]`` (memoised by both models' weights)."""
    _check_compatible(original, oracle)
    return _clean(original, items, batch_size), _patched(original, oracle, items, layers, batch_size)


def _check_compatible(original: "Model", source: "Model") -> None:
    a, b = original, source
    if (a.n_layers, a.d_model, a.d_vocab) != (b.n_layers, b.d_model, b.d_vocab):
        raise ValueError(
            f"patching needs models of one architecture: {a.model_id} has (layers, d_model, vocab) "
            f"{(a.n_layers, a.d_model, a.d_vocab)}, {b.model_id} {(b.n_layers, b.d_model, b.d_vocab)}"
        )


@by_weights
def logit_lens(subject: ModelLike, items: tuple["Item", ...], layers: tuple[int, ...], batch_size: int) -> dict[str, np.ndarray]:
    """``lens_logprob`` and ``lens_top1`` per layer ``[len(layers)]``: the residual stream at each
    layer read through the model's final norm and unembedding, on the answer tokens."""
    names = [SITE.format(layer=l) for l in layers]
    logprob, top1, count = np.zeros(len(layers)), np.zeros(len(layers)), 0
    with torch.no_grad(), using(subject) as model:
        bridge = model.bridge
        for _, batch in qa_batches(model, items, batch_size):
            _, cache = model.run_with_cache(batch.tokens.to(model.device), names)
            mask = batch.answer_mask.to(model.device)
            targets = batch.targets.to(model.device)
            for i, name in enumerate(names):
                logits = bridge.unembed(bridge.ln_final(cache[name]))
                lp = token_logprobs(logits, targets)
                hit = (logits.argmax(-1) == targets).float()
                per_item = mask.sum(-1).clamp_min(1)
                logprob[i] += float(((lp * mask).sum(-1) / per_item).sum())
                top1[i] += float(((hit * mask).sum(-1) / per_item).sum())
            count += len(batch.tokens)
    return {"lens_logprob": logprob / count, "lens_top1": top1 / count}


def depth_scores(drop_oracle: np.ndarray, drop_edited: np.ndarray, min_signal: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Knowledge-layer mask, per-layer depth (NaN off the knowledge layers) and the score
    (NaN when no layer carries ``min_signal``): see the module docstring."""
    knowledge = drop_oracle >= min_signal
    depth = np.full(len(drop_oracle), np.nan)
    depth[knowledge] = np.clip(drop_edited[knowledge] / drop_oracle[knowledge], 0.0, 1.0)
    score = float(np.average(depth[knowledge], weights=drop_oracle[knowledge])) if knowledge.any() else float("nan")
    return knowledge, depth, score


def patching_depth(
    models: Mapping[str, ModelLike],
    target: "Target",
    config: DepthConfig = DepthConfig(),
    *,
    method: str = "none",
    run_id: str | None = None,
) -> Result:
    """Stage 1 on roles ``original`` and ``retain`` (the oracle), stage 2 and the logit lens on every
    role (see the module docstring). ``original`` must be a plain `Model`."""
    for role in ("original", "retain"):
        if role not in models:
            raise ValueError(f"patching_depth needs the roles 'original' and 'retain' (the oracle); got {sorted(models)}")
    original, oracle = models["original"], models["retain"]
    if not isinstance(original, Model) or not isinstance(oracle, Model):
        raise TypeError("roles 'original' and 'retain' must be Models (the oracle is a separately trained model, not an edit of the original)")
    items = depth_items(target, config)
    layers = tuple(_layers(original, config))
    clean, patched = oracle_drops(original, oracle, items, layers, config.batch_size)
    drop_oracle = (clean - patched).mean(1).numpy()
    knowledge = drop_oracle >= config.min_signal
    if not knowledge.any():
        log.warning("patching depth: no layer's oracle patch lowers the answer log-prob by %.2f nats (max %.3f); depth_score is NaN", config.min_signal, drop_oracle.max())
    rows: list[dict] = []

    def add(metric, role, layer, value, knowledge_layer=None):
        rows.append({"metric": metric, "model": role, "layer": layer, "split": "forget", "value": float(value), "n_items": len(items), "knowledge_layer": knowledge_layer})

    for i, l in enumerate(layers):
        add("patch_drop", "retain", l, drop_oracle[i], bool(knowledge[i]))
    for role, subject in models.items():
        if role not in ("original", "retain"):
            if model_of(subject) is not original:
                _check_compatible(original, model_of(subject))
            drop = (clean - _patched(original, subject, items, layers, config.batch_size)).mean(1).numpy()
            _, depth, score = depth_scores(drop_oracle, drop, config.min_signal)
            for i, l in enumerate(layers):
                add("patch_drop", role, l, drop[i], bool(knowledge[i]))
                if knowledge[i]:
                    add("patch_depth", role, l, depth[i], True)
            add("depth_score", role, np.nan, score)
        for metric, values in logit_lens(subject, items, layers, config.batch_size).items():
            for i, l in enumerate(layers):
                add(metric, role, l, values[i])
    frame = pd.DataFrame(rows)
    frame["method"] = method
    frame["run_id"] = run_id
    return Result(frame, provenance(original.model_id, config, target=target.name, models=list(models), layers=list(layers)))


__all__ = ["DepthConfig", "depth_items", "depth_scores", "logit_lens", "oracle_drops", "patching_depth"]
