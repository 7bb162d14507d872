"""Study methods end to end on the small bios-tiny: the localized edits judged by the evaluation
card, and the feature-space edits (a file of its own so that pytest-xdist runs it beside
test_study.py)."""

from __future__ import annotations

import pytest

from mechunlearn.study import load_results, run_study

pytestmark = pytest.mark.slow


def test_localized_methods_and_the_evaluation_card_in_a_study(tmp_path):
    """SalUn, SLUG, Needle, LUNAR and fact lookup as study methods on the small world, judged by the card: the card
    sees the original and the edit (not the edit twice), and GA's hidden knowledge shows."""
    from mechunlearn.study import study_from_dict

    quick = {"steps": 30, "lr": 3e-4, "stop_forget_em": 0.1, "stop_every": 5}
    study = study_from_dict({
        "name": "card",
        "models": [{"name": "bios-tiny", "recipe": "small"}],
        "targets": [{"source": "world", "forget_frac": 0.1, "eval_retain_people": 4}],
        "methods": ["none", {"name": "ga", "params": {**quick, "lr": 2e-4}}, {"name": "salun", "params": quick},
                    {"name": "slug", "params": {"max_candidates": 2, "forget_eval_items": 120}}, {"name": "needle", "params": {"steps": 5}},
                    {"name": "lunar", "params": {"retain_items": 64, "sweep_items": 32}},
                    {"name": "fact_lookup", "params": {"steps": 10}}],
        "verifiers": [{"name": "card", "params": {"sections": ["probes", "weights", "mia", "tofu"], "max_items": 100,
                                                  "probes": {"templates_per_fact": 2, "positions": ["question"]}}}],
    })
    summary = run_study(study, tmp_path, progress=False)
    results = load_results(tmp_path)
    assert summary.failed == 0, results[results["status"] == "error"][["label", "error"]].to_string()
    card = results[results["verifier"] == "card"]
    assert set(card["section"].dropna()) == {"probes", "weights", "mia", "tofu"}
    assert set(card["role"].dropna()) == {"original", "edited", "retain"}
    assert set(card.loc[card["section"] != "probes", "role"].dropna()) == {"edited"}
    # the unedited run's weights did not move; GA's did
    rel = card[(card["metric"] == "rel_frobenius") & (card["weight"] == "all")].groupby("method")["value"].max()
    assert rel.get("none", 0.0) == 0.0 and rel["ga"] > 0
    # LUNAR changes exactly one W_out; fact lookup only MLP weights
    moved = card[(card["metric"] == "delta_frobenius") & (card["weight"] != "all") & (card["value"] > 0)]
    lunar = moved[moved["method"] == "lunar"]["weight_name"]
    assert lunar.str.endswith("mlp.W_out").all() and lunar.nunique() == 1
    assert moved[moved["method"] == "fact_lookup"]["weight_name"].str.contains(r"\.mlp\.").all()
    # SalUn's mask: 10% of the scored weights
    located = results[(results["verifier"] == "locate") & (results["metric"] == "selected_density")].set_index("method")["value"]
    assert located["salun"] == pytest.approx(0.1, abs=1e-3)
    # probes on the edited model still decode what GA no longer answers (EVALS.md finding 1)
    probes = card[(card["metric"] == "probe_acc") & (card["split"] == "forget") & (card["method"] == "ga")]
    assert probes[probes["role"] == "edited"]["value"].max() > probes[probes["role"] == "retain"]["value"].max() - 0.05


def test_feature_methods_in_a_study(tmp_path):
    """SAE clamping and CodeUnlearn (small dictionaries) as study methods on the small world."""
    from mechunlearn.study import study_from_dict

    sae = {"d_sae": 512, "k": 8, "steps": 300, "n_features": 16, "value": 30.0}
    codes = {"n_codes": 256, "k": 8, "steps": 300, "disable": 32}
    study = study_from_dict({
        "name": "features",
        "models": [{"name": "bios-tiny", "recipe": "small"}],
        "targets": [{"source": "world", "forget_frac": 0.1, "eval_retain_people": 8}],
        "methods": ["none", {"name": "sae_clamp", "params": sae}, {"name": "codeunlearn", "params": codes},
                    {"name": "codeunlearn", "label": "random codes", "params": {**codes, "random": True}}],
        "verifiers": [{"name": "behavior", "params": {"splits": ["forget", "retain"], "by": []}}],
    })
    summary = run_study(study, tmp_path, progress=False)
    results = load_results(tmp_path)
    assert summary.failed == 0, results[results["status"] == "error"][["label", "error"]].to_string()
    em = results[(results["metric"] == "exact_match")].pivot_table(index="label", columns="split", values="value")
    assert em.loc["sae_clamp", "forget"] < em.loc["none", "forget"] - 0.3
    # the forget-specific codes hurt the forget set more than as many random codes do
    chosen = em.loc["codeunlearn"]
    rand = em.loc["random codes"]
    assert (rand["forget"] - chosen["forget"]) > 0
