"""WorldConfig validation: bad values fail early with a message that says what to change."""

import dataclasses

import pytest

from mechunlearn.world import World, WorldConfig


def test_defaults():
    cfg = WorldConfig()
    assert (cfg.n_people, cfg.n_holdout, cfg.n_nonexistent, cfg.seed) == (200, 20, 200, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_people": 5000}, "unique full names"),
        ({"n_people": 500, "n_holdout": 50, "n_nonexistent": 250}, "unique full names"),
        ({"n_people": 1}, "at least 2"),
        ({"n_holdout": -1}, ">= 0"),
        ({"n_people": 10.5}, "must be an int"),
        ({"seed": True}, "must be an int"),
        ({"bios_per_person": 0}, "bios_per_person"),
        ({"qa_per_fact": 0}, "qa_per_fact must be between"),
        ({"qa_per_fact": 1000}, "qa_per_fact must be between"),
        ({"unknown_qa_per_fact": 0}, "unknown_qa_per_fact must be between"),
        ({"n_perturbed": 0}, "n_perturbed"),
        ({"n_perturbed": 40}, "n_perturbed"),
    ],
)
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorldConfig(**kwargs)


def test_world_needs_a_config():
    with pytest.raises(TypeError, match="WorldConfig"):
        World({"n_people": 10})  # type: ignore[arg-type]


def test_small_world():
    w = World(WorldConfig(n_people=10, n_holdout=0, n_nonexistent=0, bios_per_person=1))
    assert len(w.people) == 10 and not w.holdout_people and not w.nonexistent
    assert w.forget_people(0.1) and len(w.forget_people(0.5)) == 5
    with pytest.raises(ValueError, match="selects nobody"):
        w.forget_people(0.01)
