"""Answer tokenization: the tokens of ``prompt + " " + answer`` after the prompt's (no stray
word-start token on SentencePiece-style tokenizers), and BOS as the tokenizer says."""

from __future__ import annotations

import pytest

from mechunlearn.models.hf import default_prepend_bos
from mechunlearn.models.model import Model
from mechunlearn.models.text import encode_pair, encode_qa
from tests.conftest import make_tiny_model

CORPUS = ["The capital of France is Paris", "The capital of Japan is Tokyo", "Paris is in France", "Tokyo is in Japan"] * 20


def sentencepiece_style(add_bos: bool):
    """A Llama-2-style tokenizer built here: "▁" marks word starts, a leading "▁" is prepended
    to every text, so " Paris" on its own encodes as ["▁", "▁Paris"] (the stray token)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=150, special_tokens=["<pad>", "<bos>", "<eos>", "<unk>"]))
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.token_to_id("<bos>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def model_with(tokenizer, prepend_bos: bool) -> Model:
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(d_model=16, d_head=4, n_heads=4, n_layers=1, n_ctx=32, d_vocab=len(tokenizer), d_mlp=32,
                                  act_fn="gelu", normalization_type="LN", positional_embedding_type="standard", seed=0)
    return Model(TransformerBridge.boot_native(cfg), tokenizer, "sp-tiny", prepend_bos=prepend_bos)


def test_the_answer_is_what_follows_the_prompt_not_the_answer_encoded_alone():
    tok = sentencepiece_style(add_bos=False)
    model = model_with(tok, prepend_bos=False)
    assert tok.convert_ids_to_tokens(model.encode(" Paris")) == ["▁", "▁Paris"]  # the trap
    prompt, answer = encode_pair(model, "The capital of France is", "Paris")
    assert tok.convert_ids_to_tokens(answer) == ["▁Paris"]
    assert prompt + answer == model.encode("The capital of France is Paris")
    batch = encode_qa(model, ["The capital of France is", "Tokyo is in"], ["Paris", "Japan"])
    assert batch.answer_lengths.tolist() == [1, 1]
    # the masked positions predict exactly the answer tokens
    assert tok.convert_ids_to_tokens(batch.targets[batch.answer_mask].tolist()) == ["▁Paris", "▁Japan"]


def test_bos_follows_the_tokenizer():
    with_bos, without = sentencepiece_style(add_bos=True), sentencepiece_style(add_bos=False)
    assert default_prepend_bos(with_bos) is True
    assert default_prepend_bos(without) is False
    model = model_with(with_bos, prepend_bos=default_prepend_bos(with_bos))
    batch = encode_qa(model, ["Paris is in"], ["France"])
    assert batch.tokens[0, 0].item() == with_bos.bos_token_id
    assert with_bos.convert_ids_to_tokens(batch.targets[batch.answer_mask].tolist()) == ["▁France"]


def test_word_level_tokenizers_split_where_they_always_did():
    model = make_tiny_model()
    prompt, answer = encode_pair(model, "where was w1 born ?", "w21")
    assert (prompt, answer) == (model.encode("where was w1 born ?"), model.encode("w21"))
    text_only = encode_qa(model, [""], ["the city of w3"])
    # a free text is an answer-only item: every token after BOS is predicted
    assert text_only.answer_lengths.tolist() == [4]


def test_an_answer_without_tokens_of_its_own_is_refused():
    model = make_tiny_model()
    with pytest.raises(ValueError, match="no tokens"):
        encode_pair(model, "where is", "  ")
