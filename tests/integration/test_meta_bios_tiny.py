"""The verifiers' meta-evaluation on bios-tiny's small world: a tiny population with known
knowledge status (original, oracle, one GA edit, relearned and int4 copies), scored by the cheap
behaviour verifiers and meta-evaluated against the oracle."""

from __future__ import annotations

import pytest

from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.unlearn import UnlearnConfig
from mechunlearn.verify.meta import MetaConfig, PopulationConfig, build_population, meta_table, score_population
from mechunlearn.world import World

pytestmark = pytest.mark.slow

RECIPE = BiosTinyRecipe().small()
GA = UnlearnConfig(loss="ga", steps=300, lr=2e-5, batch_size=32, stop_forget_em=0.1, stop_every=5, loss_options={"retain_weight": 1.0})
VERIFIERS = ("forget_em", "forget_prob", "quantize_int4_em")


@pytest.fixture(scope="module")
def target():
    return World(RECIPE.world).target(0.1)


def test_forget_exact_match_separates_models_that_hold_the_facts_from_models_that_never_had_them(small_bios_tiny, target):
    model, retain = small_bios_tiny
    before = (model.weights_hash(), retain.weights_hash())
    pop = build_population(model, retain, target, PopulationConfig(methods=(("ga", GA),), perturb_lrs=(3e-4,), relearn_steps=10), progress=False)
    assert (model.weights_hash(), retain.weights_hash()) == before  # members are deltas, bases untouched
    assert len(pop) == 10 and pop.names("unlearned") == ["ga"]
    assert set(pop.names("positive")) == {"original", "original~ft0.0003", "original~int4", "ga~relearn"}
    scores = score_population(pop, target, VERIFIERS, MetaConfig(max_items=200), progress=False)
    assert (model.weights_hash(), retain.weights_hash()) == before
    # the members are what they claim: GA forgot, relearning on the forget questions brought it back
    assert scores.loc["ga", "forget_em"] <= 0.15 < 0.8 <= scores.loc["ga~relearn", "forget_em"]
    assert scores.loc["retain~relearn", "forget_em"] > scores.loc["retain", "forget_em"]
    table = meta_table(scores, pop.frame)
    assert list(table.index) == list(VERIFIERS)
    assert table.loc["forget_em", "faithfulness"] >= 0.9
    assert table[["relearn_robustness", "quant_robustness", "robustness"]].stack().between(0, 1).all()
    # GA's forget exact match comes back under relearning much faster than the oracle learns the facts
    assert table.loc["forget_em", "relearn_robustness"] < 0.9
