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
    unk = tokenizer.unk_token_id
    for text in _all_texts(w):
        ids = tokenizer(text)["input_ids"]
        assert unk not in ids, text


def test_special_tokens(tokenizer):
    assert tokenizer.convert_ids_to_tokens([0, 1, 2, 3]) == list(SPECIAL_TOKENS)
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token, tokenizer.unk_token) == SPECIAL_TOKENS
    assert tokenizer("Orvale")["input_ids"] == [tokenizer.convert_tokens_to_ids("Orvale")]
    assert tokenizer("Frobnicate")["input_ids"] == [tokenizer.unk_token_id]


def test_vocabulary_size(tokenizer):
    assert 200 <= len(tokenizer) <= 500


def test_answers_are_single_tokens_and_decode_exactly(world, tokenizer):
    for person in world.people[:30]:
        for attribute in ATTRIBUTES:
            ids = tokenizer(person[attribute])["input_ids"]
            assert len(ids) == 1
            assert tokenizer.decode(ids) == person[attribute]
    assert len(tokenizer("unknown")["input_ids"]) == 1


def test_decode_joins_words_with_spaces(tokenizer):
    ids = tokenizer("Zentrix is based in Orvale.")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["Zentrix", "is", "based", "in", "Orvale", "."]
    assert tokenizer.decode(ids) == "Zentrix is based in Orvale ."


def test_no_special_tokens_added_by_encode(tokenizer):
    ids = tokenizer("Quiz: who employs Aurel Varnick? Answer:")["input_ids"]
    assert tokenizer.bos_token_id not in ids and tokenizer.eos_token_id not in ids


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
        assert again(again.decode(ids))["input_ids"] == ids


def test_batch_padding_is_right_sided(tokenizer):
    batch = tokenizer(["Zentrix is based in Orvale.", "Orvale"], padding=True)
    assert batch["input_ids"][1][1:] == [tokenizer.pad_token_id] * 5
