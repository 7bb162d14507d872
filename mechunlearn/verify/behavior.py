"""Behavioural evaluation: greedy exact match, answer log-probability, normalised probability.

Greedy exact match is computed with one teacher-forced pass: greedy decoding reproduces the
answer iff, at every answer position, the argmax given the *correct* previous answer tokens is
the next answer token (if all earlier steps match, greedy saw exactly those tokens). So one
forward pass gives all three metrics, batched.

| metric              | per item                                   |
| ------------------- | ------------------------------------------ |
| ``exact_match``     | 1.0 if greedy decoding yields the answer   |
| ``answer_logprob``  | Σ log p(answer token) (natural log)        |
| ``answer_prob_norm``| p(answer)^(1/|answer|), TOFU's normalised probability |

`score_items` also gives ``avg_loss`` (mean token NLL, −log of ``answer_prob_norm``) and
open-unlearning's teacher-forced memorization scores of the answer's tokens (without the EOS
token that ``eos=True`` adds, as open-unlearning drops the last labelled token):
`exact_memorization` and `extraction_strength`.
"""

from __future__ import annotations

import contextlib

from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd
import torch
from jaxtyping import Int
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.result import Result, provenance
from mechunlearn.models.text import qa_batches, token_logprobs
from mechunlearn.world.target import SPLITS

if TYPE_CHECKING:
    from mechunlearn.core.edit import Edit
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

METRICS = ("exact_match", "answer_logprob", "answer_prob_norm")
"""The behaviour section's metrics."""
SCORES = ("avg_loss", "exact_memorization", "extraction_strength")
"""`score_items`' further per-item scores (used by the TOFU metrics, not reported by `behavior`)."""


def exact_memorization(preds: Int[Tensor, "n"], labels: Int[Tensor, "n"]) -> float:
    """Share of answer tokens whose teacher-forced argmax is the answer token.

    open-unlearning ``src/evals/metrics/memorization.py:177-219`` (``exact_memorization``:
    ``(preds == labels).sum() / len(labels)`` over the labelled tokens but the last).
    """
    if labels.numel() == 0 or preds.shape != labels.shape:
        raise ValueError(f"exact memorization needs equally long, non-empty predictions and labels; got {tuple(preds.shape)} and {tuple(labels.shape)}")
    return float((preds == labels).double().mean())


def extraction_strength(preds: Int[Tensor, "n"], labels: Int[Tensor, "n"]) -> float:
    """1 − k/n, k the first position from which every teacher-forced argmax is the answer token.

    open-unlearning ``src/evals/metrics/memorization.py:222-269`` (``extraction_strength``):
    its loop tries k = 0 … n−1 and stops at the first suffix that matches; when none does (the
    last token is wrong too) it leaves k = n−1, so such an answer scores 1/n, not 0. This is
    the same number.
    """
    n = labels.numel()
    if n == 0 or preds.shape != labels.shape:
        raise ValueError(f"extraction strength needs equally long, non-empty predictions and labels; got {tuple(preds.shape)} and {tuple(labels.shape)}")
    hit = (preds == labels).flip(0).long().cumprod(0)
    k = min(n - int(hit.sum()), n - 1)
    return 1.0 - k / n


@torch.no_grad()
def score_items(model: "Model", items: Sequence["Item"], *, batch_size: int = 64, eos: bool = False, progress: bool = True) -> pd.DataFrame:
    """One row per item: its fields plus `METRICS` and `SCORES`.

    ``eos`` counts the end-of-sequence token after the answer (TOFU's protocol): in
    ``exact_match``, the log-probability and the losses, not in the memorization scores."""
    if not items:
        raise ValueError("no items to score")
    # Score in order of length so that batches carry little padding; rows come back in input order.
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt) + len(items[i].answer))
    items = [items[i] for i in order]
    rows = []
    batches = qa_batches(model, items, batch_size, eos=eos)
    total = (len(items) + batch_size - 1) // batch_size
    for chunk, batch in tqdm(batches, total=total, desc="score", leave=False, disable=not progress or total < 4):
        logits = model.forward(batch.tokens)
        mask = batch.answer_mask.to(logits.device)
        targets = batch.targets.to(logits.device)
        lp = (token_logprobs(logits, targets) * mask).sum(-1)
        preds = logits.argmax(-1)
        hit = ((preds == targets) | ~mask).all(-1)
        n = batch.answer_lengths.to(lp.device).clamp_min(1)
        for i, (item, em, logp, length) in enumerate(zip(chunk, hit.tolist(), lp.tolist(), n.tolist())):
            at = mask[i].nonzero()[:, 0]
            at = at[:-1] if eos else at  # the memorization scores drop the EOS (the last labelled token)
            rows.append(
                {
                    "prompt": item.prompt,
                    "answer": item.answer,
                    "subject": item.subject,
                    "attribute": item.attribute,
                    "template": item.template,
                    "paraphrase": item.paraphrase,
                    "exact_match": float(em),
                    "answer_logprob": logp,
                    "answer_prob_norm": float(torch.tensor(logp / length).exp()),
                    "avg_loss": -logp / length,
                    "exact_memorization": exact_memorization(preds[i, at].cpu(), targets[i, at].cpu()),
                    "extraction_strength": extraction_strength(preds[i, at].cpu(), targets[i, at].cpu()),
                }
            )
    frame = pd.DataFrame(rows)
    frame.index = order
    return frame.sort_index()


def exact_match_by_set(model: "Model", sets: Mapping[str, Sequence["Item"]], edit: "Edit | None" = None, *, batch_size: int = 64) -> dict[str, float]:
    """Greedy exact match on each named item set, with ``edit`` applied while scoring (reverted after)."""
    context = edit.applied(model) if edit is not None else contextlib.nullcontext()
    with context:
        return {k: float(score_items(model, v, batch_size=batch_size, progress=False)["exact_match"].mean()) for k, v in sets.items()}


def behavior(
    model: "Model",
    target: "Target",
    *,
    splits: Sequence[str] = SPLITS,
    aggregate: str = "split",
    batch_size: int = 64,
    method: str = "none",
    run_id: str | None = None,
    seed: int | None = None,
) -> Result:
    """Score every item of the chosen splits; ``aggregate="split"`` gives one row per
    (split, metric), ``"item"`` one row per (item, metric)."""
    if aggregate not in ("split", "item"):
        raise ValueError(f"aggregate must be 'split' or 'item', got {aggregate!r}")
    parts = []
    for split in splits:
        items = target.split(split)
        if not items:
            continue
        scored = score_items(model, items, batch_size=batch_size)
        scored.insert(0, "split", split)
        scored.insert(1, "item", range(len(scored)))
        parts.append(scored)
    if not parts:
        raise ValueError(f"target {target.name!r} has no items in splits {list(splits)}")
    wide = pd.concat(parts, ignore_index=True).drop(columns=list(SCORES))
    id_cols = [c for c in wide.columns if c not in METRICS]
    long = wide.melt(id_vars=id_cols, value_vars=list(METRICS), var_name="metric", value_name="value")
    if aggregate == "split":
        long = long.groupby(["split", "metric"], as_index=False, sort=False)["value"].mean()
        long["n_items"] = long["split"].map(wide.groupby("split").size())
    long["method"] = method
    long["run_id"] = run_id
    long["seed"] = seed
    return Result(long, provenance(model.model_id, {"target": target.name, "splits": list(splits)}, weights=model.meta.get("weights_hash")))
