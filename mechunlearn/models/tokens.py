"""Token batches: right-padded ids with masks (no model needed; `mechunlearn.models.text` encodes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from jaxtyping import Bool, Int
from torch import Tensor


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids with their attention mask."""

    tokens: Int[Tensor, "batch pos"]
    attention_mask: Bool[Tensor, "batch pos"]


@dataclass(frozen=True)
class QABatch:
    """Prompt+answer token ids; ``answer_mask[b, t]`` marks positions whose *next* token is an
    answer token, so ``logits[answer_mask]`` predict ``targets[answer_mask]``."""

    tokens: Int[Tensor, "batch pos"]
    targets: Int[Tensor, "batch pos"]
    answer_mask: Bool[Tensor, "batch pos"]
    prompt_lengths: Int[Tensor, "batch"]
    attention_mask: Bool[Tensor, "batch pos"]

    @property
    def answer_lengths(self) -> Int[Tensor, "batch"]:
        return self.answer_mask.sum(-1)


def pad(rows: Sequence[Sequence[int]], pad_id: int, n_ctx: int) -> tuple[Tensor, Tensor]:
    """Right-pad id lists into a ``[batch, max_len]`` tensor and its boolean attention mask."""
    if not rows:
        raise ValueError("cannot build a batch from zero texts")
    width = max(len(r) for r in rows)
    if width > n_ctx:
        raise ValueError(f"a text of {width} tokens exceeds the model's context of {n_ctx} tokens; shorten it")
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = True
    return tokens, mask


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` elements."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]
