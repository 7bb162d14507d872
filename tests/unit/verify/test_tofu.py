"""TOFU-style metrics against hand-computed values, and the truth ratio against a direct computation."""

from __future__ import annotations

import pytest
import torch

from mechunlearn.verify.tofu import (
    TruthItem,
    forget_quality,
    forget_truth_ratio,
    harmonic_mean,
    retain_truth_ratio,
    truth_ratio_from_probs,
    truth_ratios,
)
from tests.conftest import make_tiny_model


def test_truth_ratio_by_hand():
    # mean perturbed 0.2 / mean paraphrased 0.4
    assert truth_ratio_from_probs([0.5, 0.3], [0.1, 0.2, 0.3]) == pytest.approx(0.5)
    assert truth_ratio_from_probs([0.0], [0.1]) == float("inf")
    with pytest.raises(ValueError):
        truth_ratio_from_probs([], [0.1])


def test_forget_and_retain_truth_ratio_reporting_by_hand():
    assert forget_truth_ratio([0.5, 2.0, 1.0]) == pytest.approx(2 / 3)  # min(R, 1/R)
    assert retain_truth_ratio([0.25, 1.5]) == pytest.approx(0.375)  # max(0, 1 - R)


def test_ks_p_value_by_hand():
    # fully separated samples of 3 and 3: D = 1, exact two-sided p = 2 / C(6, 3) = 0.1
    assert forget_quality([1, 2, 3], [4, 5, 6]) == pytest.approx(0.1)
    assert forget_quality([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        forget_quality([], [1.0])


def test_harmonic_mean_by_hand():
    assert harmonic_mean([1.0, 0.5]) == pytest.approx(2 / 3)
    assert harmonic_mean([0.9, 0.0, 0.5]) == 0.0
    with pytest.raises(ValueError):
        harmonic_mean([-1.0])


def norm_prob(model, prompt: str, answer: str) -> float:
    p = model.encode(prompt, prepend_bos=True)
    a = model.encode(" " + answer)
    ids = torch.tensor([p + a])
    with torch.no_grad():
        logp = torch.log_softmax(model.forward(ids)[0].double(), -1)
    lp = sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(a))
    return float(torch.tensor(lp / len(a)).exp())


def test_truth_ratios_match_a_direct_computation():
    model = make_tiny_model(seed=2)
    items = [
        TruthItem("where was w1 w2 born ?", ("w1 w2 was born in w30 .", "w30 is the city"), ("w1 w2 was born in w31 .", "w1 w2 was born in w32 .", "w1 w2 was born in w33 .")),
        TruthItem("who employs w3 w4 ?", ("w34 employs w3 w4",), ("w35 employs w3 w4",)),
    ]
    got = truth_ratios(model, items)
    for value, t in zip(got, items):
        para = [norm_prob(model, t.prompt, a) for a in t.paraphrased]
        pert = [norm_prob(model, t.prompt, a) for a in t.perturbed]
        assert value == pytest.approx((sum(pert) / len(pert)) / (sum(para) / len(para)), rel=1e-5)
