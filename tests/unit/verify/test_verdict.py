"""Verdicts from a card summary, against the oracle's row (the numbers are the demo's, issue 15 §0)."""

import pandas as pd
import pytest

from mechunlearn.verify.verdict import VerdictConfig, verdicts

B = "exact_match:forget"


def summary(**rows):
    return pd.DataFrame(rows).T


REFS = {
    "original": {B: 0.997, "probe_forget_best": 0.481, "relearn_other_half_em": 0.998},
    "retain": {B: 0.006, "probe_forget_best": 0.075, "relearn_other_half_em": 0.043},
}


def test_each_verdict_from_the_checks_against_the_oracle():
    s = summary(
        **REFS,
        ga={B: 0.007, "probe_forget_best": 0.194, "relearn_other_half_em": 0.522},
        wagle_npo={B: 0.100, "probe_forget_best": 0.100, "relearn_other_half_em": 0.067},
        lunar={B: 0.133, "probe_forget_best": 0.390, "relearn_other_half_em": 0.987},
        few={B: 0.01, "probe_forget_best": 0.08},
    )
    v = verdicts(s, VerdictConfig(behaviour_margin=0.1)).set_index("model")
    assert list(v.index) == ["ga", "wagle_npo", "lunar", "few"]  # references get no verdict
    assert v.loc["ga", "verdict"] == "hidden" and v.loc["ga", "failed"] == "probes, relearning"
    assert "relearning 0.522 > 0.093" in v.loc["ga", "evidence"]
    assert v.loc["wagle_npo", "verdict"] == "removed" and v.loc["wagle_npo", "n_checks"] == 2
    assert v.loc["lunar", "verdict"] == "not forgotten"  # 0.133 > 0.006 + 0.1
    assert v.loc["few", "verdict"] == "inconclusive" and "only 1 of the 2" in v.loc["few", "evidence"]
    # the margin is the config's: a stricter probe margin turns WAGLE+NPO's 0.100 vs 0.075 into hidden
    strict = verdicts(s, VerdictConfig(behaviour_margin=0.1, probe_margin=0.01)).set_index("model")
    assert strict.loc["wagle_npo", "verdict"] == "hidden" and strict.loc["wagle_npo", "failed"] == "probes"


def test_depth_is_a_floor_not_a_distance_and_checks_without_an_oracle_value_are_left_out():
    s = summary(**REFS, a={B: 0.0, "probe_forget_best": 0.07, "depth_score": 0.4, "quantize_int8_em": 0.3})
    v = verdicts(s).set_index("model").loc["a"]
    assert v["verdict"] == "hidden" and v["failed"] == "patching depth"  # no oracle quantization value
    assert v["n_checks"] == 2 and "patching depth 0.400 < 0.800" in v["evidence"]


def test_without_an_oracle_every_verdict_is_inconclusive():
    s = summary(original=REFS["original"], ga={B: 0.0, "probe_forget_best": 0.1, "relearn_other_half_em": 0.5})
    v = verdicts(s)
    assert v["verdict"].tolist() == ["inconclusive"] and "no oracle" in v["evidence"].iloc[0]


def test_bad_margins_are_refused():
    with pytest.raises(ValueError, match="min_depth"):
        VerdictConfig(min_depth=1.5)
    with pytest.raises(ValueError, match="probe_margin"):
        VerdictConfig(probe_margin=-0.1)
