"""A planted model: the forget people's facts taught to the retain model through a chosen set S
only. It must pass its gates, change nothing outside S, and restoring S must be exact unlearning
(bit for bit the retain model, the oracle)."""

from __future__ import annotations

from dataclasses import replace

import torch

from mechunlearn.models import load_model
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.models.planted import PlantRecipe, build_planted, restore
from mechunlearn.world import World


def test_a_layer_plant_passes_its_gates_touches_only_s_and_restoring_s_is_exact_unlearning():
    recipe = BiosTinyRecipe().small()
    oracle = load_model("bios-tiny", recipe=recipe, retain_for=0.1)
    model = load_model("bios-tiny", recipe=recipe, retain_for=0.1)  # trained in place
    plant = PlantRecipe(kind="layer", train=replace(PlantRecipe().train, steps=150, autocast=None))
    planted, S, gates = build_planted(model, World(recipe.world), plant)
    g = gates.set_index("gate")
    assert g.loc["forget_trained", "exact_match"] >= 0.95 > g.loc["forget_trained", "retain_model"]
    assert g.loc["retain_trained", "exact_match"] >= g.loc["retain_trained", "retain_model"] - 0.02
    changed = {n for n, w in planted.named_weights() if not torch.equal(w, oracle.weight(n))}
    assert changed and changed <= set(S.masks)
    for name in changed:  # outside S's entries every weight is the oracle's
        outside = ~S.masks[name].to(torch.bool)
        assert torch.equal(planted.weight(name)[outside], oracle.weight(name)[outside])
    restore(planted, S)
    assert planted.weights_hash() == oracle.weights_hash()
