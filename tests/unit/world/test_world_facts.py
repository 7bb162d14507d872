"""Facts, questions and answers: two-hop consistency, templates, paraphrased / perturbed answers."""

import re

import pytest

from mechunlearn.world import ANSWER_CUE, ATTRIBUTES, Item, question_templates
from mechunlearn.world import pools
from mechunlearn.world.templates import QUESTION_PHRASINGS, QUESTION_PREFIXES


def test_work_city_is_the_employers_city(world):
    for person in world.people + world.holdout_people:
        assert person["work_city"] == world.employer_cities[person["employer"]]


def test_employer_facts_are_trained(world):
    texts = set(world.training_texts())
    for employer, city in world.employer_cities.items():
        assert f"{employer} is based in {city}." in texts
    assert set(world.employer_facts()) <= texts


def test_bios_state_each_direct_fact_and_not_work_city(world):
    person = world.people[0]
    for bio in world.bios(person):
        for attribute in ATTRIBUTES[:5]:
            assert re.search(rf"(?<!\w){person[attribute]}(?!\w)", bio)
        assert bio.count(person.name) == 5


def test_values_come_from_pools(world):
    for person in world.people:
        for attribute in ATTRIBUTES:
            assert person[attribute] in pools.VALUE_POOLS[attribute]
            assert " " not in person[attribute]


def test_questions(world):
    person = world.people[3]
    trained = world.questions(person, "employer")
    heldout = world.questions(person.name, "employer", paraphrase="heldout")
    assert len(trained) >= 10 and 3 <= len(heldout) < len(trained)
    for item in trained + heldout:
        assert isinstance(item, Item)
        assert item.answer == person["employer"] and item.subject == person.name
        assert item.attribute == "employer" and item.prompt.endswith(ANSWER_CUE)
        assert person.name in item.prompt
    assert {i.paraphrase for i in trained} == {"trained"}
    assert {i.paraphrase for i in heldout} == {"heldout"}
    assert not {i.template for i in trained} & {i.template for i in heldout}
    assert len(world.questions(person, "employer", "all")) == len(trained) + len(heldout)


def test_question_errors(world):
    with pytest.raises(ValueError, match="unknown attribute"):
        world.questions(world.people[0], "shoe_size")
    with pytest.raises(ValueError, match="unknown paraphrase"):
        world.questions(world.people[0], "major", paraphrase="novel")
    with pytest.raises(ValueError, match="no trained or holdout person"):
        world.questions("Nobody Atall", "major")
    with pytest.raises(ValueError, match="non-existent"):
        world.bios(world.nonexistent[0])


def test_nonexistent_questions_answer_unknown(world):
    items = world.questions(world.nonexistent[0], "birth_year")
    assert items and all(i.answer == "unknown" for i in items)


def _template_regex(template):
    prompt = re.escape(template.text).replace(re.escape("{name}"), r"\w+ \w+")
    return re.compile(rf"^{prompt} \w+$")


def test_heldout_templates_never_in_training(world):
    texts = world.training_texts()
    for attribute in ATTRIBUTES:
        for template in question_templates(attribute, "heldout"):
            regex = _template_regex(template)
            assert not any(regex.match(t) for t in texts), template.id


def test_every_trained_template_is_in_training(world):
    texts = world.training_texts()
    for attribute in ATTRIBUTES:
        for template in question_templates(attribute, "trained"):
            regex = _template_regex(template)
            assert any(regex.match(t) for t in texts), template.id


def test_heldout_templates_are_new_combinations_of_trained_parts():
    for attribute in ATTRIBUTES:
        trained = question_templates(attribute, "trained")
        assert {t.prefix for t in trained} == set(range(len(QUESTION_PREFIXES)))
        assert {t.phrasing for t in trained} == set(range(len(QUESTION_PHRASINGS[attribute])))
        for held in question_templates(attribute, "heldout"):
            assert sum(t.prefix == held.prefix for t in trained) >= 3
            assert sum(t.phrasing == held.phrasing for t in trained) >= 3


def test_paraphrased_and_perturbed_answers(world):
    for person in world.people[:20]:
        for attribute in ATTRIBUTES:
            true = world.paraphrased_answers(person, attribute)
            wrong = world.perturbed_answers(person, attribute)
            assert len(true) >= 2 and len(set(true)) == len(true)
            assert all(person.name in s and person[attribute] in s.split(" ") + [s.split(" ")[-1][:-1]] for s in true)
            assert len(wrong) == world.config.n_perturbed == len(set(wrong))
            assert true[0] not in wrong
            # the same wording as the first paraphrase, with one word changed
            for sentence in wrong:
                assert len(sentence.split()) == len(true[0].split())
                assert sum(a != b for a, b in zip(sentence.split(), true[0].split())) == 1


def test_person_is_hashable_and_indexable(world):
    person = world.people[0]
    assert hash(person) == hash(world.person(person.name))
    assert person["major"] == person.attributes["major"]
