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
"""

from __future__ import annotations

import contextlib

from typing import TYPE_CHECKING, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from mechunlearn.core.result import Result, provenance
from mechunlearn.models.text import qa_batches, token_logprobs
from mechunlearn.world.target import SPLITS

if TYPE_CHECKING:
    from mechunlearn.core.edit import Edit
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

METRICS = ("exact_match", "answer_logprob", "answer_prob_norm")


@torch.no_grad()
def score_items(model: "Model", items: Sequence["Item"], *, batch_size: int = 64, progress: bool = True) -> pd.DataFrame:
    """One row per item: its fields plus ``exact_match``, ``answer_logprob``, ``answer_prob_norm``."""
    if not items:
        raise ValueError("no items to score")
    # Score in order of length so that batches carry little padding; rows come back in input order.
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt) + len(items[i].answer))
    items = [items[i] for i in order]
    rows = []
    batches = qa_batches(model, items, batch_size)
    total = (len(items) + batch_size - 1) // batch_size
    for chunk, batch in tqdm(batches, total=total, desc="score", leave=False, disable=not progress or total < 4):
        logits = model.forward(batch.tokens)
        mask = batch.answer_mask.to(logits.device)
        targets = batch.targets.to(logits.device)
        lp = (token_logprobs(logits, targets) * mask).sum(-1)
        hit = ((logits.argmax(-1) == targets) | ~mask).all(-1)
        n = batch.answer_lengths.to(lp.device).clamp_min(1)
        for item, em, logp, length in zip(chunk, hit.tolist(), lp.tolist(), n.tolist()):
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
    wide = pd.concat(parts, ignore_index=True)
    id_cols = [c for c in wide.columns if c not in METRICS]
    long = wide.melt(id_vars=id_cols, value_vars=list(METRICS), var_name="metric", value_name="value")
    if aggregate == "split":
        long = long.groupby(["split", "metric"], as_index=False, sort=False)["value"].mean()
        long["n_items"] = long["split"].map(wide.groupby("split").size())
    long["method"] = method
    long["run_id"] = run_id
    long["seed"] = seed
    return Result(long, provenance(model.model_id, {"target": target.name, "splits": list(splits)}, weights=model.meta.get("weights_hash")))
