"""A toy target in the tiny test tokenizer's vocabulary (people ``wI wJ``, answers ``wK``)."""

from __future__ import annotations

import random

import pytest

from mechunlearn.world.target import Item, Target
from mechunlearn.world.templates import BIO_TEMPLATES

TEMPLATES = {
    "birth_city": ["where was {name} born ?", "which city was {name} born in ?", "{name} was born in which city ?"],
    "employer": ["who employs {name} ?", "where is {name} works at ?", "{name} works at which ?"],
    "work_city": ["in which city is {name} ?", "where is the city of {name} ?", "{name} works in which city ?"],
}
VALUES = {"birth_city": ["w30", "w31", "w32"], "employer": ["w33", "w34", "w35"]}
EMPLOYER_CITY = {"w33": "w36", "w34": "w37", "w35": "w38"}


def toy_people(n: int, offset: int = 0) -> list[str]:
    return [f"w{offset + 2 * i} w{offset + 2 * i + 1}" for i in range(n)]


def toy_items(names: list[str], seed: int = 0) -> list[Item]:
    rng = random.Random(seed)
    items = []
    for name in names:
        facts = {a: rng.choice(v) for a, v in VALUES.items()}
        facts["work_city"] = EMPLOYER_CITY[facts["employer"]]
        for attribute, templates in TEMPLATES.items():
            stated = attribute if attribute in BIO_TEMPLATES else "employer"  # as `World.context`
            context = BIO_TEMPLATES[stated][0].format(name=name, value=facts[stated])
            for t, text in enumerate(templates):
                items.append(Item(text.format(name=name), facts[attribute], name, attribute, f"{attribute}:{t}", "heldout" if t == 2 else "trained", context=context))
    return items


def toy_target() -> Target:
    """4 forget, 8 retain, 3 holdout people (names from disjoint words)."""
    return Target(
        name="toy",
        forget=tuple(toy_items(toy_people(4, 0), seed=1)),
        retain=tuple(toy_items(toy_people(8, 8), seed=2)),
        holdout=tuple(toy_items(toy_people(3, 24), seed=3)),
    )


@pytest.fixture
def target() -> Target:
    return toy_target()
