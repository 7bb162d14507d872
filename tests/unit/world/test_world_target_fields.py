"""World targets carry the fields file targets have: paraphrased and perturbed answers and a
context sentence, so the same card sections run on both."""

from mechunlearn.verify.attacks import reintroduction_items
from mechunlearn.world.templates import BIO_TEMPLATES


def test_world_items_carry_truth_answers_and_context(world):
    target = world.target(0.1)
    item = next(i for i in target.forget if i.attribute == "birth_city")
    person = world.person(item.subject)
    assert item.paraphrased_answers == tuple(world.paraphrased_answers(item.subject, "birth_city"))
    assert len(item.perturbed_answers) == world.config.n_perturbed
    assert all(person["birth_city"] not in p for p in item.perturbed_answers)
    assert item.context == BIO_TEMPLATES["birth_city"][0].format(name=item.subject, value=person["birth_city"])
    city = next(i for i in target.forget if i.attribute == "work_city" and i.subject == item.subject)
    assert city.context == BIO_TEMPLATES["employer"][0].format(name=item.subject, value=person["employer"])
    assert all(i.context and i.perturbed_answers for i in target.holdout)


def test_world_contexts_give_both_reintroduction_kinds(world):
    target = world.target(0.1)
    two_hop, _ = reintroduction_items(target, "two_hop")
    direct, _ = reintroduction_items(target, "direct")
    assert {i.attribute for i in two_hop} == {"work_city"}
    assert "work_city" not in {i.attribute for i in direct} and len({i.attribute for i in direct}) == 5
