"""TOFU metrics against hand-computed values of open-unlearning's definitions, and the truth ratio
against a direct computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from mechunlearn.verify.behavior import exact_memorization, extraction_strength
from mechunlearn.verify.tofu import (
    MODEL_UTILITY_PARTS,
    TruthItem,
    forget_quality,
    forget_truth_ratio,
    generation_rouge,
    harmonic_mean,
    model_utility,
    retain_truth_ratio,
    retain_utility,
    truth_ratio_from_losses,
    truth_ratios,
)
from mechunlearn.world.target import Item
from tests.conftest import make_tiny_model


def test_truth_ratio_is_a_geometric_mean_of_normalised_probabilities():
    # paraphrased probs 0.5, 0.3; perturbed 0.1, 0.2, 0.3 -> losses -ln p, averaged, exponentiated:
    # (0.1 * 0.2 * 0.3) ** (1/3) / (0.5 * 0.3) ** (1/2) = 0.181712 / 0.387298 = 0.46918
    para, pert = [-math.log(p) for p in (0.5, 0.3)], [-math.log(p) for p in (0.1, 0.2, 0.3)]
    assert truth_ratio_from_losses(para, pert) == pytest.approx(0.46918, abs=1e-5)
    # not the arithmetic mean (0.2 / 0.4 = 0.5) this project used before
    assert abs(truth_ratio_from_losses(para, pert) - 0.5) > 0.03
    # mean losses 2 and 4: exp(-4) / (exp(-2) + 1e-10)
    assert truth_ratio_from_losses([1.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(math.exp(-2.0), rel=1e-8)
    with pytest.raises(ValueError):
        truth_ratio_from_losses([], [0.1])
    with pytest.raises(ValueError, match="non-negative"):
        truth_ratio_from_losses([float("nan")], [0.1])


def test_forget_and_retain_truth_ratio_reporting_by_hand():
    assert forget_truth_ratio([0.5, 2.0, 1.0]) == pytest.approx(2 / 3)  # min(R, 1/(R + 1e-10))
    assert retain_truth_ratio([0.25, 1.5]) == pytest.approx(0.375)  # max(0, 1 - R)


def test_exact_memorization_and_extraction_strength_by_hand():
    labels = torch.tensor([1, 9, 3, 4])
    # right at 0, 2, 3: EM 3/4; the first matching suffix starts at k = 2: ES = 1 - 2/4
    preds = torch.tensor([1, 2, 3, 4])
    assert exact_memorization(preds, labels) == pytest.approx(0.75)
    assert extraction_strength(preds, labels) == pytest.approx(0.5)
    assert extraction_strength(labels, labels) == 1.0
    # the last token wrong: no suffix matches; open-unlearning's loop ends at k = n - 1 -> 1/n
    wrong_last = torch.tensor([1, 9, 3, 7])
    assert exact_memorization(wrong_last, labels) == pytest.approx(0.75)
    assert extraction_strength(wrong_last, labels) == pytest.approx(0.25)
    with pytest.raises(ValueError):
        exact_memorization(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))


def test_model_utility_needs_all_nine_parts_and_retain_utility_the_retain_three():
    parts = {name: 0.5 for name in MODEL_UTILITY_PARTS}
    parts["wf_Truth_Ratio"] = 0.25  # 9 / (8 * 2 + 4) = 0.45
    assert model_utility(parts) == pytest.approx(9 / 20)
    retain = {"retain_Q_A_Prob": 0.5, "retain_Q_A_ROUGE": 1.0, "retain_Truth_Ratio": 0.25}
    assert retain_utility(retain) == pytest.approx(3 / (2 + 1 + 4))
    with pytest.raises(ValueError, match="retain_utility"):
        model_utility(retain)
    with pytest.raises(ValueError, match="missing"):
        retain_utility({"retain_Q_A_Prob": 0.5})


def test_generation_rouge_is_the_recall_of_the_answer_in_the_generation():
    fake = SimpleNamespace(generate=lambda prompts, max_new_tokens, batch_size: [" Lyon, in France.", " Paris", ""])
    items = [Item("born in ?", "Lyon"), Item("works at ?", "the Paris office"), Item("q ?", "x")]
    assert generation_rouge(fake, items, max_new_tokens=4) == pytest.approx([1.0, 1 / 3, 0.0])


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


def mean_nll(model, prompt: str, answer: str, eos: bool) -> float:
    p = model.encode(prompt, prepend_bos=True)
    a = model.encode(" " + answer) + ([model.eos_token_id] if eos else [])
    ids = torch.tensor([p + a])
    with torch.no_grad():
        logp = torch.log_softmax(model.forward(ids)[0].double(), -1)
    return -sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(a)) / len(a)


def test_truth_ratios_match_a_direct_computation():
    model = make_tiny_model(seed=2)
    items = [
        TruthItem("where was w1 w2 born ?", ("w1 w2 was born in w30 .", "w30 is the city"), ("w1 w2 was born in w31 .", "w1 w2 was born in w32 .", "w1 w2 was born in w33 .")),
        TruthItem("who employs w3 w4 ?", ("w34 employs w3 w4",), ("w35 employs w3 w4",)),
    ]
    for eos in (False, True):  # TOFU's protocol counts the EOS token in every answer's loss
        got = truth_ratios(model, items, eos=eos)
        for value, t in zip(got, items):
            para = [mean_nll(model, t.prompt, a, eos) for a in t.paraphrased]
            pert = [mean_nll(model, t.prompt, a, eos) for a in t.perturbed]
            assert value == pytest.approx(math.exp(-sum(pert) / len(pert)) / math.exp(-sum(para) / len(para)), rel=1e-5)


def test_qa_scores_of_a_reference_model_generate_once_per_weights(monkeypatch):
    """A study scores the same original and retain models in every run's card: their QA scores
    and greedy generations are computed once per weights (memoised), an edited copy afresh."""
    from mechunlearn.verify import tofu

    model = make_tiny_model(seed=3)
    items = (Item("where was w1 w2 born ?", "w30"), Item("who employs w3 w4 ?", "w34"))
    calls = []
    real = type(model).generate
    monkeypatch.setattr(type(model), "generate", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    first = tofu.qa_scores(model, items, max_new_tokens=3)
    again = tofu.qa_scores(model, items, max_new_tokens=3)
    assert len(calls) == 1
    assert set(first) == {*tofu.QA_SCORES, "rougeL_recall"} and all(len(v) == 2 for v in first.values())
    assert all((first[k] == again[k]).all() for k in first)
    with torch.no_grad():
        next(p for _, p in model.named_weights()).add_(0.5)  # new weights: scored afresh
    tofu.qa_scores(model, items, max_new_tokens=3)
    assert len(calls) == 2
