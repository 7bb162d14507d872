"""The verification suite on bios-tiny (small world): caching on a real model, and the evaluation
card on a GA edit reproducing EVALS.md's findings against the retain model."""

from __future__ import annotations

import pytest
import torch

from mechunlearn.models.activations import cache_activations, substring_last_token
from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.unlearn import UnlearnConfig, unlearn
from mechunlearn.verify.attacks import AttackConfig
from mechunlearn.verify.card import CardConfig, card_summary, evaluation_card
from mechunlearn.verify.mia import MIAConfig
from mechunlearn.verify.probes import ProbeConfig, probe_summary
from mechunlearn.verify.tofu import TofuConfig
from mechunlearn.world import World

pytestmark = pytest.mark.slow

RECIPE = BiosTinyRecipe().small()
GA = UnlearnConfig(loss="ga", steps=300, lr=2e-5, batch_size=32, stop_forget_em=0.1, stop_every=5, loss_options={"retain_weight": 1.0})


@pytest.fixture(scope="module")
def world():
    return World(RECIPE.world)


@pytest.fixture(scope="module")
def target(world):
    return world.target(0.1)


@pytest.fixture(scope="module")
def card(small_bios_tiny, target, world):
    model, retain = small_bios_tiny
    edit = unlearn(model, target.where(paraphrase="trained"), GA)
    config = CardConfig(
        # 4 forget people: every template for power; at the question's last token, where bios-tiny
        # reads attributes out (the subject position adds half the probe cost and no finding)
        probes=ProbeConfig(templates_per_fact=None, positions=("question",)),
        attacks=AttackConfig(max_items=240),
        mia=MIAConfig(max_items=300),
        tofu=TofuConfig(max_retain_people=8, max_qa_items=300),
        max_items=400,
    )
    return evaluation_card((model, edit), None, retain, target, config)


def test_subject_token_cache_matches_run_with_cache(small_bios_tiny, target):
    model, _ = small_bios_tiny
    items = list(target.forget[:7])
    prompts = [it.prompt for it in items]
    subj = substring_last_token(model, prompts, [it.subject for it in items])
    cache = cache_activations(model, prompts, ["blocks.1.hook_resid_post"], positions=subj, batch_size=3, progress=False)
    for i, p in enumerate(prompts):
        ids = model.encode(p, prepend_bos=True)
        assert model.tokenizer.decode([ids[subj[i]]]) == items[i].subject.split()[-1]
        _, ref = model.run_with_cache(torch.tensor([ids]), ["blocks.1.hook_resid_post"])
        torch.testing.assert_close(cache["blocks.1.hook_resid_post"][i], ref["blocks.1.hook_resid_post"][0, subj[i]], atol=1e-5, rtol=1e-5)


def test_card_has_every_section_and_open_unlearning_names(card):
    f = card.frame
    assert set(f["section"]) == {"behavior", "probes", "weights", "activations", "attacks", "mia", "tofu"}
    for metric in (
        "forget_quality", "forget_truth_ratio", "retain_Truth_Ratio", "retain_utility", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "retain_Q_A_ROUGE",
        "extraction_strength", "exact_memorization", "privleak", "mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus", "mia_reference", "probe_acc",
    ):
        assert metric in set(f["metric"]), metric
    assert "model_utility" not in set(f["metric"])  # its 9 parts need sets bios-tiny has not
    assert set(f.loc[f["section"].isin(["mia", "tofu"]), "protocol"]) == {"mechunlearn"}
    assert set(f["model"].dropna()) == {"original", "edited", "retain"}


def test_reference_points_behave(card):
    s = card_summary(card)
    assert s.loc["original", "exact_match:forget"] >= 0.95
    assert s.loc["edited", "exact_match:forget"] <= 0.15
    assert s.loc["retain", "exact_match:forget"] < 0.5
    # KS on the small world's 24 forget truth ratios has little power (original vs retain p = 0.45
    # here); on the full world (120 items) the unedited model's forget_quality is 0.016 (demo study)
    assert s.loc["original", "forget_quality"] < s.loc["retain", "forget_quality"]
    assert s.loc["original", "mia_min_k"] > s.loc["retain", "mia_min_k"] + 0.2
    # MUSE's sign: the unedited model's forget set stands out as members (privleak well below 0)
    assert s.loc["original", "privleak"] < -20


def test_finding_probes_decode_above_the_retain_floor(card):
    # bios-tiny reads attributes out at the question's last token; at the subject's last token
    # the small world's probes do not generalise to new people even on the unedited model
    best = probe_summary(card, split="forget").xs("refit", axis=1, level="reading").loc["question"]
    assert best["original"].mean() > 0.5
    assert best["edited"].mean() > best["retain"].mean() + 0.15


def test_finding_relearning_restores_the_other_half(card):
    f = card.frame
    other = f[(f["metric"] == "relearn_exact_match") & (f["half"] == "other")]
    last = other[other["step"] == other["step"].max()].set_index("model")["value"]
    assert last["edited"] > last["retain"] + 0.2


def _reintroduction(card, kind):
    f = card.frame
    rows = f[(f["metric"] == "attack_exact_match") & (f["attack"] == f"reintroduce_{kind}") & (f["split"] == "forget")]
    return rows.pivot_table(index="model", columns="context", values="value")


def test_finding_reintroduction_works_for_the_retain_model_too(card):
    """Exact unlearning included: the retain model never saw the forget people, yet answers the
    two-hop work city once the prompt states the employer (it learnt to read its context).

    The GA model of this small world also gains on directly stated facts, but its two-hop
    answers stay suppressed (0.00 -> 0.00 here: GA pushed the city tokens down after these
    names, and 40 names of reading practice make a weak copying circuit); on the full world GA
    goes 0.24 -> 0.96, NPO 0.29 -> 0.96 (notebook 06, asserted in its full mode)."""
    two_hop = _reintroduction(card, "two_hop")
    assert two_hop.loc["retain", False] < 0.1
    assert two_hop.loc["retain", True] > two_hop.loc["retain", False] + 0.5
    direct = _reintroduction(card, "direct")
    assert direct.loc["edited", True] > direct.loc["edited", False] + 0.1
