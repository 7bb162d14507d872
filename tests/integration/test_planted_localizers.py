"""Localizers scored against a planted S, and unlearning restricted to S (issue 14, §2–3), on the
small world's layer plant (built once, cached in the test home like notebook 09's)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.models.planted import PlantRecipe, load_planted
from mechunlearn.world import World


@pytest.fixture(scope="module")
def layer_plant():
    from mechunlearn.verify.localization import GroundTruth

    recipe = BiosTinyRecipe().small()
    plant = PlantRecipe(kind="layer", train=replace(PlantRecipe().train, steps=150, autocast=None))
    model, S = load_planted("layer", recipe=plant, world_recipe=recipe)
    return model, GroundTruth.of(model, S), World(recipe.world).target(0.1, paraphrase="trained")


def test_tracing_finds_the_planted_mlp_and_the_references_bracket_the_scale(layer_plant):
    from mechunlearn.locate.suite import run_suite
    from mechunlearn.verify.localization import score_table

    model, truth, target = layer_plant
    outputs = run_suite(model, target, ["attribution_patching", "magnitude"], progress=False)
    table = score_table(outputs, truth).set_index(["localizer", "granularity"])
    # S is one whole MLP: attribution patching ranks that module first of the eight.
    assert table.loc[("attribution_patching", "modules"), "auroc"] == 1.0
    assert table.loc[("oracle", "entries"), "auroc"] == 1.0
    assert abs(table.loc[("random", "entries"), "auroc"] - 0.5) < 0.01  # 3.1 M entries, 20 draws
    # A layer plant has no head in S: AUROC at heads is undefined, and the row says why.
    assert np.isnan(table.loc[("magnitude", "heads"), "auroc"]) and "no unit" in table.loc[("magnitude", "heads"), "note"]


def test_unlearning_restricted_to_s_changes_only_s_and_forgets(layer_plant):
    from mechunlearn.unlearn import UnlearnConfig
    from mechunlearn.verify.behavior import score_items
    from mechunlearn.verify.localization import oracle_scores, random_scores, restricted_unlearning, top_entries

    model, truth, target = layer_plant
    before = model.weights_hash()
    masks = {"S": top_entries(oracle_scores(truth, "entries"), truth, "entries"), "random": top_entries(random_scores(truth, "entries"), truth, "entries")}
    config = UnlearnConfig(loss="graddiff", loss_options={"retain_weight": 5.0}, steps=150, lr=3e-4, stop_forget_em=0.08, stop_every=5, stop_items=300)
    table, edits, card = restricted_unlearning(model, target, truth, masks, losses=("graddiff",), configs={"graddiff": config}, progress=False)
    assert card is None and model.weights_hash() == before  # the edits are returned, the model is left as it was
    rows = table.set_index("selection")
    assert rows.loc["S", "in_s"] == 1.0 and rows.loc["S", "entries"] == len(truth)
    assert rows.loc["random", "in_s"] < 0.3  # S is a sixth of the block weights
    edit = edits["graddiff:S"]
    for n in edit.deltas:  # only S's entries move
        assert not bool((edit.dense(n) != 0)[~truth.masks[n]].any()), f"{n} changed outside S"
    with edit.applied(model):
        forget = float(score_items(model, list(target.forget), progress=False)["exact_match"].mean())
    assert forget <= 0.12
