"""Meta-evaluation of verifiers (`mechunlearn.verify.meta`) on synthetic scores: faithfulness of an
oracle and a random verifier, the robustness formulas' edge cases, the table and its figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mechunlearn.figures.meta import faithfulness_robustness
from mechunlearn.verify.meta import (
    PopulationConfig,
    accuracy_threshold,
    faithfulness,
    harmonic_mean,
    meta_table,
    quant_robustness,
    relearn_robustness,
)


def members(n_pos: int = 3, n_neg: int = 3, unlearned: tuple[str, ...] = ("ga", "npo")) -> pd.DataFrame:
    """A population frame: original (+ perturbed), retain (+ perturbed), the oracle's relearned
    and quantized copies, and each unlearned model with its relearned and quantized copies."""
    rows = [("original", "positive", None, "none"), ("retain", "negative", None, "none")]
    rows += [(f"original~p{i}", "positive", "original", "retain_ft") for i in range(n_pos - 1)]
    rows += [(f"retain~p{i}", "negative", "retain", "retain_ft") for i in range(n_neg - 1)]
    rows += [("retain~relearn", "reference", "retain", "relearn"), ("retain~int4", "negative", "retain", "quantize")]
    for u in unlearned:
        rows += [(u, "unlearned", None, "unlearn"), (f"{u}~relearn", "positive", u, "relearn"), (f"{u}~int4", "attacked", u, "quantize")]
    return pd.DataFrame(rows, columns=["member", "status", "parent", "transform"]).set_index("member")


def test_an_oracle_verifier_is_perfectly_faithful():
    m = members(5, 6)
    truth = (m["status"] == "positive").astype(float)
    noisy = truth + np.random.default_rng(0).uniform(0, 0.4, len(m))  # never crosses 0.5 ↔ 1
    assert faithfulness(noisy, m["status"]) == 1.0
    assert faithfulness(1 - noisy, m["status"]) == 0.0


def test_a_random_verifier_is_at_chance_over_seeds():
    m = members(40, 40)
    values = [faithfulness(pd.Series(np.random.default_rng(seed).normal(size=len(m)), index=m.index), m["status"]) for seed in range(20)]
    assert abs(np.mean(values) - 0.5) < 0.05
    assert np.std(values) > 0.02  # it is random: single seeds do stray


def test_faithfulness_ignores_members_of_unknown_status():
    m = members(2, 2)
    s = pd.Series(0.0, index=m.index)
    s[m["status"] == "positive"] = 1.0
    # counted as negatives, the 2.0s would outrank the positives; counted as positives, the -5.0s
    # would rank below the negatives: either way the AUC would fall below 1
    s[m["status"] == "unlearned"] = 2.0
    s[m["status"].isin(["attacked", "reference"])] = -5.0
    assert faithfulness(s, m["status"]) == 1.0


def test_relearning_robustness_edge_cases():
    # the unlearned model's score comes all the way back; the oracle's barely moves: low R
    assert relearn_robustness(0.0, 1.0, 0.0, 0.1) == pytest.approx(0.1)
    # the same change as the oracle's, or none at all: 1
    assert relearn_robustness(0.2, 0.5, 0.0, 0.3) == 1.0
    assert relearn_robustness(0.2, 0.2, 0.0, 0.3) == 1.0
    assert relearn_robustness(0.2, 0.2, 0.0, 0.0) == 1.0  # 0 / 0
    assert relearn_robustness(0.5, 0.4, 0.0, -0.3) == 1.0  # falls, less than the oracle
    # less than the oracle's gain: still 1 (min(·, 1)); the oracle loses while the unlearned gains: 0
    assert relearn_robustness(0.0, 0.1, 0.0, 0.4) == 1.0
    assert relearn_robustness(0.0, 0.4, 0.3, 0.2) == 0.0
    np.testing.assert_allclose(relearn_robustness(np.array([0.0, 0.0]), np.array([0.5, 0.2]), 0.0, 0.1), [0.2, 0.5])


def test_quantization_robustness_edge_cases():
    assert quant_robustness(0.3, 0.3) == 1.0
    assert quant_robustness(0.3, 0.1) == 1.0  # quantization lowers the score: no recovery shown
    assert quant_robustness(0.2, 0.8) == pytest.approx(0.25)
    assert quant_robustness(0.0, 0.9) == 0.0  # full recovery from nothing
    assert quant_robustness(0.0, 0.0) == 1.0
    with pytest.raises(ValueError, match=">= 0"):
        quant_robustness(-0.1, 0.5)


def test_harmonic_mean():
    assert harmonic_mean(0.5, 0.5) == pytest.approx(0.5)
    assert harmonic_mean(1.0, 0.0) == 0.0
    assert harmonic_mean(1.0, 1 / 3) == pytest.approx(0.5)
    assert np.isnan(harmonic_mean(float("nan"), 1.0))


def _scores(m: pd.DataFrame) -> pd.DataFrame:
    """Two verifiers: ``deep`` reads the knowledge (the unlearned models never held it) and is
    not moved by attacks beyond the oracle; ``shallow`` reads behaviour, which the unlearned
    models suppressed and the attacks bring back."""
    status = m["status"]
    deep = pd.Series(0.05, index=m.index)
    deep[status == "positive"] = 0.9
    deep["retain~relearn"] = 0.3
    deep[[u for u in m.index if m.loc[u, "status"] in ("unlearned", "attacked")]] = 0.05
    shallow = deep.copy()
    shallow[status == "unlearned"] = 0.02
    shallow[status == "attacked"] = 0.6
    return pd.DataFrame({"deep": deep, "shallow": shallow})


def test_meta_table_tells_a_robust_verifier_from_a_fooled_one():
    m = members()
    table = meta_table(_scores(m), m)
    assert list(table.index) == ["deep", "shallow"]
    assert {"faithfulness", "relearn_robustness", "quant_robustness", "robustness", "quant_robustness_vs_retain"} <= set(table.columns)
    assert table.loc["deep", "faithfulness"] == table.loc["shallow", "faithfulness"] == 1.0
    # deep: the unlearned models gain 0.85 under relearning, the oracle 0.25 -> R = 0.25/0.85
    assert table.loc["deep", "relearn_robustness"] == pytest.approx(0.25 / 0.85)
    assert table.loc["deep", "quant_robustness"] == 1.0
    assert table.loc["shallow", "quant_robustness"] == pytest.approx(0.02 / 0.6)
    assert table.loc["shallow", "robustness"] < table.loc["deep", "robustness"]
    assert table.loc["deep", "robustness"] == pytest.approx(harmonic_mean(0.25 / 0.85, 1.0))
    assert (table["n_unlearned"] == 2).all() and (table["n_positive"] == 5).all()


def test_filter_keeps_only_models_the_verifier_calls_unlearned():
    m = members()
    scores = _scores(m)
    scores.loc["npo", "deep"] = 0.95  # the verifier says npo still holds the knowledge
    t = accuracy_threshold(scores["deep"], m["status"])
    assert 0.05 < t <= 0.9
    filtered = meta_table(scores, m, filter_insufficient=True)
    assert filtered.loc["deep", "n_unlearned"] == 1 and filtered.loc["shallow", "n_unlearned"] == 2
    assert meta_table(scores, m).loc["deep", "n_unlearned"] == 2


def test_meta_table_rejects_an_incomplete_population():
    m = members()
    with pytest.raises(ValueError, match="relearned and a quantized copy"):
        meta_table(_scores(m), m.drop(index="ga~int4"))
    with pytest.raises(ValueError, match="retain"):
        meta_table(_scores(m), m.drop(index="retain~relearn"))
    bad = m.copy()
    bad.loc["ga", "status"] = "forgotten"
    with pytest.raises(ValueError, match="unknown member statuses"):
        meta_table(_scores(m), bad)
    with pytest.raises(ValueError, match="at least one positive and one negative"):
        faithfulness(pd.Series(1.0, index=m.index), m["status"].replace("negative", "reference"))
    holes = _scores(m)["deep"].copy()
    holes["retain"] = float("nan")
    with pytest.raises(ValueError, match="no score for"):
        faithfulness(holes, m["status"])


def test_population_config_checks_its_labels():
    with pytest.raises(ValueError, match="unique"):
        PopulationConfig(methods=(("ga", PopulationConfig().methods[0][1]), ("ga", PopulationConfig().methods[1][1])))
    with pytest.raises(ValueError, match="'~'"):
        PopulationConfig(methods=(("ga~x", PopulationConfig().methods[0][1]),))


def test_faithfulness_robustness_figure_has_a_point_per_verifier():
    m = members()
    table = meta_table(_scores(m), m)
    table.loc["blind"] = {**table.loc["deep"].to_dict(), "robustness": float("nan")}
    fig = faithfulness_robustness(table)
    assert list(fig.data[0].text) == ["deep", "shallow"]
    assert "blind" in fig.layout.title.text
    with pytest.raises(ValueError, match="faithfulness"):
        faithfulness_robustness(table.drop(columns="faithfulness"))
