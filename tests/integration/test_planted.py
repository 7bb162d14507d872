"""A planted model: the forget people's facts taught to the retain model through a chosen set S
only. It must pass its gates, change nothing outside S, and restoring S must be exact unlearning
(bit for bit the retain model, the oracle)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.models.planted import DEFAULT_RECIPES, PlantRecipe, build_planted, planted_selection, restore
from mechunlearn.world import World

SMALL = BiosTinyRecipe().small()


@pytest.fixture(scope="module")
def oracle():
    return load_model("bios-tiny", recipe=SMALL, retain_for=0.1)


def _changed(planted, oracle) -> set[str]:
    return {n for n, w in planted.named_weights() if not torch.equal(w, oracle.weight(n))}


def test_a_layer_plant_passes_its_gates_touches_only_s_and_restoring_s_is_exact_unlearning(oracle):
    # Through load_model: built (gated) on first use and cached, the one build this file,
    # test_planted_localizers.py and notebook 09 share; the gate table is the build's.
    planted = load_model("bios-tiny-planted-layer", recipe=SMALL)
    S = planted_selection(planted)
    g = planted.meta["planted_gates"].set_index("gate")
    assert g.loc["forget_trained", "exact_match"] >= 0.95 > g.loc["forget_trained", "retain_model"]
    assert g.loc["retain_trained", "exact_match"] >= g.loc["retain_trained", "retain_model"] - 0.02
    changed = _changed(planted, oracle)
    assert changed and changed <= set(S.masks)
    for name in changed:  # outside S's entries every weight is the oracle's
        outside = ~S.masks[name].to(torch.bool)
        assert torch.equal(planted.weight(name)[outside], oracle.weight(name)[outside])
    restore(planted, S)
    assert planted.weights_hash() == oracle.weights_hash()


@pytest.mark.parametrize("kind", ["low_rank", "neurons"])
def test_a_few_plant_steps_change_only_s_and_restoring_s_is_exact_unlearning(oracle, kind):
    # the mechanics at 20 steps (the gates need the default recipe's steps; see DEFAULT_RECIPES)
    model = load_model("bios-tiny", recipe=SMALL, retain_for=0.1)
    plant = replace(DEFAULT_RECIPES[kind], train=replace(DEFAULT_RECIPES[kind].train, steps=20, autocast=None))
    planted, S, gates = build_planted(model, World(SMALL.world), plant, check_gates=False)
    changed = _changed(planted, oracle)
    assert changed == set(S.masks)
    if kind == "low_rank":  # the one target matrix, by a delta of rank <= r that is U @ V
        (name,) = changed
        assert name == f"blocks.{plant.layer}.{plant.matrix}"
        delta = planted.weight(name) - oracle.weight(name)
        assert 0 < int(torch.linalg.matrix_rank(delta, rtol=1e-4)) <= plant.rank
        assert torch.allclose(delta, S.meta["factors"]["U"] @ S.meta["factors"]["V"], atol=1e-5)
    else:  # whole neurons: only S's columns of W_in / rows of W_out moved
        for name in changed:
            outside = ~S.masks[name]
            assert torch.equal(planted.weight(name)[outside], oracle.weight(name)[outside])
    restore(planted, S)
    assert planted.weights_hash() == oracle.weights_hash()
