"""Token batches for texts and for question/answer items, shared by training, losses and verifiers.

An item is scored as the tokens of ``prompt + " " + answer``; its answer tokens are those that
follow the prompt's own tokens (lm-eval-harness' ``_encode_pair`` convention, and EVALS.md's).
Encoding the answer on its own after a leading space would add a stray word-start token on
SentencePiece tokenizers (Llama-2, Mistral, Gemma) and shift every NLL and exact match. Where
a tokenizer merges across the boundary, the split is the longest prefix the full text shares
with the prompt's tokens. BOS is prepended where the model's tokenizer adds one
(`Model.prepend_bos`). Batches are right padded: with causal attention, padding after a row's
end never changes that row's logits. With ``eos=True`` the end-of-sequence token follows each
answer and counts as one of its tokens (TOFU's convention; `mechunlearn.verify.protocol`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mechunlearn.models.tokens import QABatch, TokenBatch, chunks, pad

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item


def encode_pair(model: "Model", prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """Prompt and answer token ids of one item: the tokens of ``prompt + " " + answer`` split
    after the prompt's own tokens (see the module docstring). An empty prompt makes the whole
    text the answer (a free text scored as an answer-only item)."""
    answer = answer.strip()
    if not answer:
        raise ValueError(f"answer {answer!r} to {prompt!r} has no tokens")
    if not prompt:
        return ([], model.encode(answer))
    whole = model.encode(f"{prompt} {answer}")
    context = model.encode(prompt)
    n = 0
    while n < min(len(whole), len(context)) and whole[n] == context[n]:
        n += 1
    if n == len(whole):
        raise ValueError(f"answer {answer!r} to {prompt!r} has no tokens of its own after the prompt")
    return whole[:n], whole[n:]


def encode_qa(model: "Model", prompts: Sequence[str], answers: Sequence[str], *, eos: bool = False) -> QABatch:
    """Batch of prompt+answer sequences with the mask of answer-predicting positions.

    A free text is scored as an item with an empty prompt (every token after the first is an
    "answer" token), which is how text-based losses (Needle, GA on bios) reuse the same code.
    ``eos`` appends the model's end-of-sequence token to every answer (it is then the last
    masked target of its row).
    """
    if len(prompts) != len(answers):
        raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
    bos = [model.bos_token_id] if model.prepend_bos else []
    rows, starts, ends = [], [], []
    for prompt, answer in zip(prompts, answers):
        p, a = encode_pair(model, prompt, answer)
        if eos:
            a = [*a, model.eos_token_id]
        rows.append(bos + p + a)
        starts.append(len(bos) + len(p))
        ends.append(len(bos) + len(p) + len(a))
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


def qa_batches(model: "Model", items: Sequence["Item"], batch_size: int, *, eos: bool = False) -> Iterator[tuple[Sequence["Item"], QABatch]]:
    """(items, QABatch) pairs over a list of items (``eos``: see `encode_qa`)."""
    for chunk in chunks(items, batch_size):
        yield chunk, encode_qa(model, [i.prompt for i in chunk], [i.answer for i in chunk], eos=eos)


def reference_ids(model: "Model", words: Sequence[str]) -> list[int]:
    """Single-token ids of the reference words, in the usual surface forms.

    Each word is tried as ``"word"``, ``" word"``, ``"Word"``, ``" Word"`` and lower case; forms
    that the tokenizer splits into several tokens are skipped (their first piece is usually a
    generic fragment), and so are special tokens (``<unk>``). Raises if no word has a
    single-token form.
    """
    special = set(getattr(model.tokenizer, "all_special_ids", ()) or ())
    ids: list[int] = []
    for word in words:
        word = word.strip()
        if not word:
            continue
        forms = dict.fromkeys([word, " " + word, word[:1].upper() + word[1:], " " + word[:1].upper() + word[1:], word.lower(), " " + word.lower()])
        for form in forms:
            enc = model.encode(form)
            # an unknown word may encode to the single <unk> token: never a reference token
            if len(enc) == 1 and enc[0] not in ids and enc[0] not in special:
                ids.append(enc[0])
    if not ids:
        raise ValueError(f"none of the reference words {list(words)[:6]} is a single token for {model.model_id}; add shorter words")
    return ids
