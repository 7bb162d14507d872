"""The word-level tokenizer: covers every word of the world, specials, save / reload."""

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mechunlearn.world import ATTRIBUTES, SPECIAL_TOKENS, World, WorldConfig, build_tokenizer


def _all_texts(world):
    texts = list(world.training_texts()) + world.employer_facts()
    for person in world.people + world.holdout_people:
        texts += world.bios(person)
        for attribute in ATTRIBUTES:
            for item in world.questions(person, attribute, "all"):
                texts.append(f"{item.prompt} {item.answer}")
            texts += world.paraphrased_answers(person, attribute)
            texts += world.perturbed_answers(person, attribute)
    texts += [f"{i.prompt} {i.answer}" for i in world.unknown_items("all")]
    return texts


@pytest.mark.parametrize("seed", [0, 7])
def test_no_unknown_tokens_anywhere(seed, world, tokenizer):
    w = world if seed == 0 else World(WorldConfig(seed=seed))
    # The pre-tokenizer splits on whitespace first, then isolates punctuation inside each chunk,
    # so tokenizing every distinct whitespace chunk covers every text exactly (and fast).
    chunks = sorted({chunk for text in _all_texts(w) for chunk in text.split()})
    unk = tokenizer.unk_token_id
    encoded = tokenizer(chunks, add_special_tokens=False)["input_ids"]
    bad = [c for c, ids in zip(chunks, encoded) if unk in ids or not ids]
    assert not bad, f"words tokenized to <unk>: {bad[:20]}"


def test_chunked_tokenization_matches_whole_texts(world, tokenizer):
    texts = world.training_texts()[:300] + world.bios(world.holdout_people[0])
    plain = dict(add_special_tokens=False)
    for text, ids in zip(texts, tokenizer(texts, **plain)["input_ids"]):
        per_chunk = [i for chunk in text.split() for i in tokenizer(chunk, **plain)["input_ids"]]
        assert ids == per_chunk


def test_special_tokens(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == SPECIAL_TOKENS
    orvale = tokenizer.convert_tokens_to_ids("Orvale")
    assert tokenizer("Orvale")["input_ids"] == [tokenizer.bos_token_id, orvale]
    assert tokenizer("Orvale", add_special_tokens=False)["input_ids"] == [orvale]
    assert tokenizer("Frobnicate", add_special_tokens=False)["input_ids"] == [tokenizer.unk_token_id]


def test_vocabulary_size(tokenizer):
    assert 200 <= len(tokenizer) <= 500


def test_answers_are_single_tokens_and_decode_exactly(world, tokenizer):
    for person in world.people[:30]:
        for attribute in ATTRIBUTES:
            ids = tokenizer(person[attribute], add_special_tokens=False)["input_ids"]
            assert len(ids) == 1
            assert tokenizer.decode(ids) == person[attribute]
    assert len(tokenizer("unknown", add_special_tokens=False)["input_ids"]) == 1


def test_decode_joins_words_with_spaces(tokenizer):
    ids = tokenizer("Zentrix is based in Orvale.", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["Zentrix", "is", "based", "in", "Orvale", "."]
    assert tokenizer.decode(ids) == "Zentrix is based in Orvale ."
    assert tokenizer.decode([tokenizer.bos_token_id, *ids], skip_special_tokens=True) == tokenizer.decode(ids)


def test_encode_prepends_bos_only(tokenizer):
    ids = tokenizer("Quiz: who employs Aurel Varnick? Answer:")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.bos_token_id not in ids[1:] and tokenizer.eos_token_id not in ids


def test_same_vocabulary_for_every_world(tokenizer):
    other = build_tokenizer(World(WorldConfig(seed=5, n_people=30)))
    assert other.get_vocab() == tokenizer.get_vocab()


@pytest.mark.parametrize("loader", [AutoTokenizer, PreTrainedTokenizerFast])
def test_save_and_reload(tmp_path, world, tokenizer, loader):
    tokenizer.save_pretrained(tmp_path)
    again = loader.from_pretrained(str(tmp_path))
    assert again.get_vocab() == tokenizer.get_vocab()
    assert (again.pad_token_id, again.bos_token_id, again.eos_token_id, again.unk_token_id) == (0, 1, 2, 3)
    for text in world.training_texts()[:200] + world.bios(world.holdout_people[0]):
        ids = tokenizer(text)["input_ids"]
        assert again(text)["input_ids"] == ids
        assert again.decode(ids) == tokenizer.decode(ids)
        plain = again.decode(ids, skip_special_tokens=True)
        assert again(plain)["input_ids"] == ids


def test_batch_padding_is_right_sided(tokenizer):
    batch = tokenizer(["Zentrix is based in Orvale.", "Orvale"], padding=True)
    assert batch["input_ids"][1][2:] == [tokenizer.pad_token_id] * 5
    assert batch["attention_mask"][1] == [1, 1, 0, 0, 0, 0, 0]


def test_works_with_transformer_lens_bridge(tokenizer):
    """boot_native accepts the in-memory tokenizer, and to_tokens adds exactly one <bos>."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=32, d_head=16, n_heads=2, n_layers=1, n_ctx=32, d_vocab=len(tokenizer), d_mlp=64,
        act_fn="gelu", seed=0, normalization_type="LN", positional_embedding_type="standard",
    )
    bridge = TransformerBridge.boot_native(cfg, tokenizer=tokenizer)
    prompt = "Quiz: who employs Aurel Varnick? Answer:"
    tokens = bridge.to_tokens(prompt)
    assert tokens[0].tolist() == tokenizer(prompt)["input_ids"]
    assert bridge.to_str_tokens("Quiz: who") == ["<bos>", "Quiz", ":", "who"]
