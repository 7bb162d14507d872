"""bios-tiny: the build recipe and its gates, on the small world (same gate code as the full build)."""

from dataclasses import replace

import pytest
import torch

from mechunlearn.models import bios_tiny, load_model
from mechunlearn.unlearn.loop import TrainConfig

pytestmark = pytest.mark.slow

RECIPE = bios_tiny.BiosTinyRecipe().small()


@pytest.fixture(scope="module")
def built():
    return load_model("bios-tiny", recipe=RECIPE)


def test_gates_pass_and_are_saved(built):
    gates = bios_tiny.gates_of(RECIPE)
    gated = gates.dropna(subset=["gate_min"])
    assert set(gated["gate"]) == {"trained_templates", "heldout_templates", "unknown_nonexistent"}
    assert gated["passed"].all()
    assert (gated["exact_match"] >= gated["gate_min"]).all()


def test_cached_load_gives_the_same_weights(built):
    again = load_model("bios-tiny", recipe=RECIPE)
    assert again.weights_hash() == built.weights_hash() == built.meta["weights_hash"]
    from mechunlearn.world import World

    item = World(RECIPE.world).target(0.1, paraphrase="trained").retain[0]
    tokens = again.tokenize([item.prompt]).tokens
    with torch.no_grad():
        assert torch.equal(again(tokens), built(tokens))


def test_retain_model_never_saw_the_forget_people(built):
    from mechunlearn.verify.behavior import score_items
    from mechunlearn.world import World

    retain = load_model("bios-tiny", recipe=RECIPE, retain_for=0.1)
    world = World(RECIPE.world)
    forget = world.target(0.1, paraphrase="trained").forget
    on_base = score_items(built, forget, progress=False)["exact_match"].mean()
    on_retain = score_items(retain, forget, progress=False)["exact_match"].mean()
    assert on_base >= 0.95
    # the retain model can only guess (few values per attribute), never recall
    assert on_retain < 0.5
    gates = bios_tiny.gates_of(RECIPE, retain_for=0.1)
    assert gates.dropna(subset=["gate_min"])["passed"].all()


def test_a_build_that_misses_its_gates_is_not_saved():
    weak = replace(RECIPE, train=TrainConfig(steps=3, lr=1e-4), seed=123)
    with pytest.raises(bios_tiny.GateError, match="not saved") as err:
        bios_tiny.build(weak)
    assert not err.value.gates["passed"].dropna().all()
    assert not (bios_tiny._cache_dir(weak, None) / "weights.pt").exists()
