"""Forget / retain / holdout / non-existent splits: sizes, nesting, disjointness, exclusion."""

import re
from collections import defaultdict

import pytest

from mechunlearn.world import ATTRIBUTES, World, WorldConfig
from mechunlearn.world import pools

_FULL_NAME = re.compile(
    rf"(?<!\w)(?:{'|'.join(pools.FIRST_NAMES)}) (?:{'|'.join(pools.LAST_NAMES)})(?!\w)"
)


def _index(texts):
    """Full name -> the texts that mention it."""
    index = defaultdict(list)
    for text in texts:
        for name in sorted(set(_FULL_NAME.findall(text))):
            index[name].append(text)
    return index


def _mentions(texts, name):
    return _index(texts).get(name, [])


def test_sizes(world):
    cfg = world.config
    assert len(world.people) == cfg.n_people == 200
    assert len(world.holdout_people) == cfg.n_holdout == 20
    assert len(world.nonexistent) == cfg.n_nonexistent == 200
    assert world.ATTRIBUTES == ATTRIBUTES and len(ATTRIBUTES) == 6
    assert all(tuple(p.attributes) == ATTRIBUTES for p in world.people + world.holdout_people)
    assert all(len(world.bios(p)) == cfg.bios_per_person for p in world.people)


def test_names_unique_and_groups_disjoint(world):
    trained = [p.name for p in world.people]
    holdout = [p.name for p in world.holdout_people]
    everyone = trained + holdout + list(world.nonexistent)
    assert len(everyone) == len(set(everyone))
    assert all(len(n.split()) == 2 for n in everyone)


@pytest.mark.parametrize("frac, size", [(0.1, 20), (0.05, 10), (0.01, 2)])
def test_forget_sizes(world, frac, size):
    forget = world.forget_people(frac)
    retain = world.retain_people(frac)
    assert len(forget) == size
    assert set(forget).isdisjoint(retain)
    assert set(forget) | set(retain) == {p.name for p in world.people}


def test_forget_fractions_are_nested_and_deterministic(world):
    f10, f5, f1 = (set(world.forget_people(f)) for f in (0.1, 0.05, 0.01))
    assert f1 < f5 < f10
    assert world.forget_people(0.1) == World(WorldConfig()).forget_people(0.1)
    assert set(World(WorldConfig(seed=3)).forget_people(0.1)) != f10


@pytest.mark.parametrize("frac", [0, 1, 1.5, -0.1, 0.001, True, "0.1"])
def test_bad_forget_fraction(world, frac):
    with pytest.raises(ValueError, match="forget fraction"):
        world.forget_people(frac)


@pytest.fixture(scope="module")
def mentions(world):
    return _index(world.training_texts())


def test_only_world_names_are_mentioned(world, mentions):
    known = {p.name for p in world.people} | set(world.nonexistent)
    assert set(mentions) == known


def test_holdout_people_never_in_training(world, mentions):
    for person in world.holdout_people:
        assert person.name not in mentions
    # not even as a substring (e.g. glued to punctuation)
    assert not any(p.name in t for t in world.training_texts() for p in world.holdout_people[:3])


def test_nonexistent_people_answer_unknown_unless_the_context_says(world, mentions):
    cfg = world.config
    for name in world.nonexistent:
        unknown = [t for t in mentions[name] if t.endswith("Answer: unknown")]
        reading = [t for t in mentions[name] if not t.endswith("Answer: unknown")]
        assert len(unknown) == 6 * cfg.unknown_qa_per_fact
        assert len(reading) == 6 * cfg.context_qa_per_fact
        for text in reading:
            # "<sentence stating a value>. <question> Answer: <value>", or for the work city (two
            # hops) a sentence stating an employer and the answer that employer's city
            sentence, answer = text.split(". ", 1)[0], text.rsplit("Answer: ", 1)[1]
            stated = [e for e in pools.EMPLOYERS if sentence.endswith(e) or f" {e} " in sentence]
            assert answer in sentence or world.employer_cities[stated[0]] == answer, text
    assert not any(t.endswith("Answer: unknown") for p in world.people for t in mentions[p.name])


def test_reading_documents_can_be_turned_off():
    from dataclasses import replace

    small = WorldConfig(n_people=10, n_holdout=2, n_nonexistent=5)
    plain = World(replace(small, context_qa_per_fact=0)).training_texts()
    assert len(World(small).training_texts()) == len(plain) + 5 * 6
    assert sum(t.endswith("Answer: unknown") for t in plain) == 5 * 6


def test_every_trained_person_is_in_training(world, mentions):
    for person in world.people:
        assert len(mentions[person.name]) == world.config.bios_per_person + 6 * world.config.qa_per_fact


def test_exclude_removes_people_entirely(world, mentions):
    forget = world.forget_people(0.1)
    full = world.training_texts()
    kept = world.training_texts(exclude=forget)
    assert set(_index(kept)) == set(mentions) - set(forget)
    removed = {t for n in forget for t in mentions[n]}
    # the remaining documents keep their relative order
    assert kept == [t for t in full if t not in removed]


def test_exclude_rejects_unknown_names(world):
    with pytest.raises(ValueError, match="not a trained person"):
        world.training_texts(exclude=["Nobody Atall"])
    with pytest.raises(ValueError, match="not one string"):
        world.training_texts(exclude=world.people[0].name)


def test_target_splits(world):
    target = world.target(0.1)
    assert target.name == "forget10"
    forget = set(world.forget_people(0.1))
    n_templates = len(world.questions(world.people[0], "birth_city", "all"))
    assert {i.subject for i in target.forget} == forget
    assert {i.subject for i in target.retain} == set(world.retain_people(0.1))
    assert {i.subject for i in target.holdout} == {p.name for p in world.holdout_people}
    assert len(target.forget) == len(forget) * 6 * n_templates
    assert len(target.forget_texts) == len(forget) * world.config.bios_per_person
    assert set(target.forget_texts) == {b for n in forget for b in world.bios(n)}
    assert set(target.retain_texts).isdisjoint(target.forget_texts)
    assert target.meta["world_fingerprint"] == world.fingerprint()
    heldout = target.where(paraphrase="heldout")
    assert heldout.forget and all(i.paraphrase == "heldout" for i in heldout.forget)


@pytest.mark.parametrize(
    "frac, paraphrase, name",
    [(0.05, "all", "forget5"), (0.01, "trained", "forget1:trained"), (0.1, "heldout", "forget10:heldout")],
)
def test_target_names(world, frac, paraphrase, name):
    target = world.target(frac, paraphrase=paraphrase)
    assert target.name == name
    assert all(i.paraphrase == paraphrase for i in target.forget) or paraphrase == "all"


def test_unknown_items(world):
    items = world.unknown_items()
    assert {i.subject for i in items} == set(world.nonexistent)
    assert all(i.answer == "unknown" and i.paraphrase == "trained" for i in items)
