"""The world's word-level tokenizer: one token per word or punctuation mark.

A Hugging Face ``PreTrainedTokenizerFast`` over a ``tokenizers`` WordLevel model. Text is split
on whitespace and every punctuation mark is its own token, so ``"Orvale."`` is ``Orvale`` +
``.``. Case is kept (``decode`` gives back the answer exactly as ``Item.answer`` spells it).
``decode`` joins tokens with single spaces.

``encode`` prepends ``<bos>`` (``add_bos_token=True``, like Llama tokenizers) because the model
is trained on ``<bos> text <eos>`` documents and because TransformerLens' bridge uses a
tokenizer that adds BOS as it is (otherwise it tries to reload it from disk by name). Pass
``add_special_tokens=False`` to get the bare word ids of an answer.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Iterable

from mechunlearn.world import pools
from mechunlearn.world.templates import all_template_texts

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

    from mechunlearn.world.world import World

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "<bos>", "<eos>", "<unk>")
"""Special tokens, with ids 0, 1, 2, 3."""

TOKENIZER_NAME = "mechunlearn-world-words"
"""``name_or_path`` of a freshly built tokenizer (a saved one reports its directory)."""

_PLACEHOLDER = re.compile(r"\{[a-z_]+\}")


@functools.lru_cache(maxsize=1)
def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation(behavior="isolated")]
    )


def split_words(text: str) -> list[str]:
    """The words (tokens) a text splits into, exactly as the tokenizer splits it."""
    return [w for w, _ in _pre_tokenizer().pre_tokenize_str(text)]


def world_vocabulary(extra_texts: Iterable[str] = ()) -> list[str]:
    """All words of the world's pools and templates (plus ``extra_texts``), sorted, no specials.

    The vocabulary depends only on the fixed pools and templates, not on the seed or sizes, so
    every world shares one tokenizer.
    """
    pre = _pre_tokenizer()
    words: set[str] = set()
    texts = [_PLACEHOLDER.sub(" ", t) for t in all_template_texts()]
    for pool in (pools.FIRST_NAMES, pools.LAST_NAMES, *pools.VALUE_POOLS.values()):
        texts.extend(pool)
    texts.append(pools.UNKNOWN_ANSWER)
    texts.extend(extra_texts)
    for text in texts:
        words.update(w for w, _ in pre.pre_tokenize_str(text))
    clash = words.intersection(SPECIAL_TOKENS)
    if clash:
        raise ValueError(f"world texts contain special-token strings {sorted(clash)}")
    return sorted(words)


def build_tokenizer(world: "World | None" = None, model_max_length: int = 256) -> "PreTrainedTokenizerFast":
    """A word-level ``PreTrainedTokenizerFast`` covering every word of the world.

    ``world`` is accepted for the API's sake and checked: every word of its training texts must
    be in the vocabulary. Save with ``save_pretrained``; reload with ``AutoTokenizer`` or
    ``PreTrainedTokenizerFast.from_pretrained``.
    """
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = world_vocabulary()
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *words))}
    if world is not None:
        # Whitespace splitting comes first in the pre-tokenizer, so distinct chunks suffice.
        chunks = {chunk for text in world.training_texts() for chunk in text.split()}
        missing = sorted({w for chunk in chunks for w in split_words(chunk)} - vocab.keys())
        if missing:
            raise ValueError(f"world texts use words missing from the vocabulary: {missing[:20]}")
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = _pre_tokenizer()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="right",
        add_bos_token=True,
        add_eos_token=False,
        clean_up_tokenization_spaces=False,
    )
    # TransformerLens reads init_kwargs["name_or_path"] unconditionally when it sets up a
    # tokenizer; an in-memory tokenizer has none unless we give it one.
    tokenizer.init_kwargs.setdefault("name_or_path", TOKENIZER_NAME)
    tokenizer.name_or_path = tokenizer.name_or_path or TOKENIZER_NAME
    return tokenizer
