"""Localizers scored against a planted S, and unlearning restricted to S (issue 14, §2–3), on the
small world's layer plant (built once, cached in the test home like notebook 09's)."""

from __future__ import annotations

import numpy as np
import pytest

from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.models.planted import load_planted
from mechunlearn.world import World


@pytest.fixture(scope="module")
def layer_plant():
    from mechunlearn.verify.localization import GroundTruth

    recipe = BiosTinyRecipe().small()
    model, S = load_planted("layer", world_recipe=recipe)  # the default recipe: cached, shared with notebook 09
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


def test_sae_latents_point_at_the_planted_layer_without_being_told_it(layer_plant):
    from mechunlearn.locate.suite import run_suite
    from mechunlearn.verify.localization import score_table

    model, truth, target = layer_plant
    outputs = run_suite(model, target, ["sae_latents"], progress=False)  # trains its SAE (~20 s) once per cache
    granularity, scores = outputs["sae_latents"]
    assert granularity == "neurons" and scores.shape == (model.n_layers * model.d_mlp,) and np.isfinite(scores).all()
    table = score_table(outputs, truth, all_coarser=False).set_index("localizer")
    # measured 0.82 (precision at |S| 0.61, random 0.25): the neurons writing along the forget
    # latents are mostly the planted layer's
    assert table.loc["sae_latents", "auroc"] > 0.7 and table.loc["sae_latents", "precision_at_s"] > 0.45
    planted = [L for L in range(model.n_layers) if bool(truth.masks[f"blocks.{L}.mlp.W_out"].any())]
    assert planted == [int(np.argmax(scores.reshape(model.n_layers, -1).mean(1)))]  # its layer's mean score is the highest


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


def test_a_planted_study_restricts_unlearning_and_its_retain_run_is_the_oracle(layer_plant, tmp_path):
    from mechunlearn.study import load_results, run_study, study_from_dict

    study = study_from_dict({
        "name": "planted-small",
        "models": [{"name": "bios-tiny-planted-layer", "recipe": "small"}],
        "targets": [{"source": "world", "forget_frac": 0.1, "paraphrase": "trained", "eval_paraphrase": "trained", "eval_retain_people": 4}],
        "methods": ["none", "retain", {"name": "planted_graddiff", "sweep": {"selection": ["oracle", "random"]}}],
        "verifiers": [{"name": "behavior", "params": {"splits": ["forget", "retain"]}}],
        "seeds": [0],
    })
    summary = run_study(study, tmp_path, threads=1, progress=False)
    assert (summary.ok, summary.failed) == (len(study.runs()), 0)
    r = load_results(tmp_path)
    em = r[(r["metric"] == "exact_match") & (r["verifier"] == "behavior")].pivot_table(index="label", columns="split", values="value")
    assert em.loc["none", "forget"] >= 0.95  # the planted model knows the forget people ...
    assert em.loc["retain", "forget"] < 0.1  # ... its oracle (the retain model it was planted into) does not
    restricted = [label for label in em.index if label.startswith("planted_graddiff")]
    assert len(restricted) == 2 and (em.loc[restricted, "forget"] <= 0.15).all()
