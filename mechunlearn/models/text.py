"""Token batches for texts and for question/answer items, shared by training, losses and verifiers.

Prompts and answers are tokenised separately and concatenated (answer text gets one leading
space), so the answer's tokens are the same whichever prompt precedes them. Batches are right
padded: with causal attention, padding after a row's end never changes that row's logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item


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


def encode_qa(model: "Model", prompts: Sequence[str], answers: Sequence[str]) -> QABatch:
    """Batch of prompt+answer sequences with the mask of answer-predicting positions.

    A free text is scored as an item with an empty prompt (every token after the first is an
    "answer" token), which is how text-based losses (Needle, GA on bios) reuse the same code.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    rows, starts, ends = [], [], []
    for prompt, answer in zip(prompts, answers):
        p = model.encode(prompt, prepend_bos=model.prepend_bos)
        a = model.encode(" " + answer.strip())
        if not a:
            raise ValueError(f"answer {answer!r} to {prompt!r} has no tokens")
        rows.append(p + a)
        starts.append(len(p))
        ends.append(len(p) + len(a))
    tokens, attn = pad(rows, model.pad_token_id, model.n_ctx)
    targets = torch.roll(tokens, -1, dims=1)
    pos = torch.arange(tokens.shape[1])
    start = torch.tensor(starts)
    end = torch.tensor(ends)
    # position t predicts token t+1: answer tokens occupy [start, end), predicted from [start-1, end-1);
    # with an empty prompt and no BOS the first token has no predictor and is skipped.
    answer_mask = (pos[None] >= (start[:, None] - 1).clamp_min(0)) & (pos[None] < end[:, None] - 1)
    return QABatch(tokens, targets, answer_mask, start, attn)


def token_logprobs(logits: Float[Tensor, "batch pos vocab"], targets: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos"]:
    """log p(target token) at every position."""
    return torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None].to(logits.device))[..., 0]


def answer_nll(model: "Model", batch: QABatch) -> Float[Tensor, "batch"]:
    """Summed negative log-likelihood of each row's answer tokens (differentiable)."""
    logits = model.forward(batch.tokens)
    lp = token_logprobs(logits, batch.targets)
    return -(lp * batch.answer_mask.to(lp.device)).sum(-1)


def lm_nll(model: "Model", batch: TokenBatch) -> Float[Tensor, ""]:
    """Mean next-token negative log-likelihood over the non-pad tokens of a text batch."""
    logits = model.forward(batch.tokens)
    targets = torch.roll(batch.tokens, -1, dims=1)
    valid = batch.attention_mask & torch.roll(batch.attention_mask, -1, dims=1)
    valid[:, -1] = False
    lp = token_logprobs(logits, targets)
    return -(lp * valid.to(lp.device)).sum() / valid.sum().clamp_min(1)


def chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    """Consecutive slices of at most ``size`` elements."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def qa_batches(model: "Model", items: Sequence["Item"], batch_size: int) -> Iterator[tuple[Sequence["Item"], QABatch]]:
    """(items, QABatch) pairs over a list of items."""
    for chunk in chunks(items, batch_size):
        yield chunk, encode_qa(model, [i.prompt for i in chunk], [i.answer for i in chunk])
