"""Membership inference: every score and the AUC against hand-computed values, then a real
membership signal on a tiny model fine-tuned on the forget items."""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from mechunlearn.models.text import answer_nll, encode_qa
from mechunlearn.unlearn.loop import TrainConfig, fit
from mechunlearn.verify.mia import (
    MIAConfig,
    auc,
    gradnorm,
    gradnorm_scores,
    item_text,
    membership_inference,
    mia_scores,
    min_k,
    min_k_plus_plus,
    privleak,
    roc_curve,
    vocab_moments,
    zlib_ratio,
)
from tests.conftest import make_tiny_model


def test_auc_by_hand():
    # pairs (pos > neg): 3>0.5, 3>2, 2>0.5, 2=2 (half), 1>0.5 -> 4.5 of 6
    assert auc([3, 2, 1], [0.5, 2]) == pytest.approx(0.75)
    assert auc([1, 2], [3, 4]) == 0.0
    assert auc([5], [1, 2, 3]) == 1.0
    assert auc([1, 1], [1, 1]) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        auc([], [1])
    with pytest.raises(ValueError, match="NaN"):
        auc([float("nan")], [1])


def test_roc_curve_spans_the_square_and_integrates_to_the_auc():
    pos, neg = [3, 2, 1, 0.7], [0.5, 2, 0.1]
    roc = roc_curve(pos, neg)
    assert (roc.iloc[0]["fpr"], roc.iloc[0]["tpr"]) == (0.0, 0.0)
    assert (roc.iloc[-1]["fpr"], roc.iloc[-1]["tpr"]) == (1.0, 1.0)
    assert roc["fpr"].is_monotonic_increasing and roc["tpr"].is_monotonic_increasing
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(auc(pos, neg))


def test_min_k_by_hand():
    lp = torch.tensor([-1.0, -5.0, -2.0, -0.5, -3.0])
    assert min_k(lp, 0.4) == pytest.approx(-4.0)  # int(5 * 0.4) = 2 lowest: -5, -3
    assert min_k(lp, 0.1) == pytest.approx(-5.0)  # at least one token
    assert min_k(lp, 1.0) == pytest.approx(-2.3)
    with pytest.raises(ValueError, match="k must be"):
        min_k(lp, 0.0)


def test_min_k_plus_plus_by_hand():
    lp = torch.tensor([-1.0, -2.0, -3.0])
    mu = torch.tensor([-1.5, -1.5, -1.5])
    sigma = torch.tensor([0.5, 1.0, 2.0])
    # z = [1, -0.5, -0.75]
    assert min_k_plus_plus(lp, mu, sigma, 0.4) == pytest.approx(-0.75)
    assert min_k_plus_plus(lp, mu, sigma, 0.7) == pytest.approx(-0.625)


def test_vocab_moments_by_hand():
    logits = torch.log(torch.tensor([[0.25, 0.75]]))
    mu, sigma = vocab_moments(logits)
    m = 0.25 * math.log(0.25) + 0.75 * math.log(0.75)
    s = math.sqrt(0.25 * math.log(0.25) ** 2 + 0.75 * math.log(0.75) ** 2 - m**2)
    assert float(mu) == pytest.approx(m) and float(sigma) == pytest.approx(s)


def test_zlib_ratio_by_hand():
    # zlib.compress(b"aaaa") is 12 bytes (2 header + 6 deflate + 4 adler32)
    assert zlib_ratio(3.0, "aaaa") == pytest.approx(3.0 / 12)
    assert zlib_ratio(3.0, "abcdefgh") == pytest.approx(3.0 / 16)


def test_privleak_by_hand_as_muse_and_open_unlearning_define_it():
    # privacy.py:42-52: score = 1 - AUC_edited, ref = 1 - AUC_retain, (score - ref) / ref * 100
    assert privleak(1.0, 0.5) == pytest.approx(-100.0)  # a model that remembers its forget set
    assert privleak(0.5, 0.5) == pytest.approx(0.0)  # the retain model itself
    assert privleak(0.6, 0.5) == pytest.approx(-20.0)  # (0.4 - 0.5) / 0.5
    assert privleak(0.25, 0.5) == pytest.approx(50.0)  # (0.75 - 0.5) / 0.5: over-unlearned
    assert privleak(0.7, 0.4) == pytest.approx(-50.0)  # (0.3 - 0.6) / 0.6: not the old / AUC_retain
    with pytest.raises(ValueError, match="AUC is 1"):
        privleak(0.9, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        privleak(1.2, 0.5)


def test_min_k_plus_plus_floors_the_variance_as_open_unlearning_does():
    # sigma^2 is clamped at 1e-6 (sigma >= 1e-3): a near-deterministic position gives z = -2 / 1e-3
    lp, mu = torch.tensor([-3.0]), torch.tensor([-1.0])
    assert min_k_plus_plus(lp, mu, torch.tensor([0.0]), 1.0) == pytest.approx(-2000.0)


def test_gradnorm_by_hand():
    grads = [torch.tensor([3.0, 4.0]), torch.tensor([[1.0, 0.0], [0.0, 0.0]])]
    assert gradnorm(grads, 2) == pytest.approx((5.0 + 1.0) / 2)  # mean of per-tensor norms
    assert gradnorm(grads, 1) == pytest.approx((7.0 + 1.0) / 2)
    assert gradnorm(grads, float("inf")) == pytest.approx((4.0 + 1.0) / 2)
    with pytest.raises(ValueError):
        gradnorm(grads, 3)
    with pytest.raises(ValueError, match="unknown membership"):
        MIAConfig(attacks=("loss", "recall"))


def test_mia_scores_match_a_direct_computation(target):
    model = make_tiny_model(seed=3)
    items = list(target.forget[:5])
    scores = mia_scores(model, items, MIAConfig(k=0.4), progress=False)
    for row, it in zip(scores.itertuples(), items):
        ids = model.encode(item_text(it), prepend_bos=True)
        with torch.no_grad():
            logits = model.forward(torch.tensor([ids]))[0, :-1].double()
        logp = torch.log_softmax(logits, -1)
        tok = logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
        assert row.n_tokens == len(ids) - 1
        assert row.loss == pytest.approx(float(tok.mean()), rel=1e-5)
        lowest = torch.sort(tok).values[: max(1, int(tok.numel() * 0.4))]
        assert row.min_k == pytest.approx(float(lowest.mean()), rel=1e-5)
        p = logp.exp()
        mu = (p * logp).sum(-1)
        sd = ((p * logp**2).sum(-1) - mu**2).sqrt()
        z = torch.sort((tok - mu) / sd).values[: max(1, int(tok.numel() * 0.4))]
        assert row.min_k_plus_plus == pytest.approx(float(z.mean()), rel=1e-4)


def test_a_model_trained_on_the_forget_items_leaks_membership(target):
    trained = make_tiny_model(seed=1)
    items = [it for it in target.forget if it.paraphrase == "trained"]

    def loss(step):
        # the MIA's "full" scope scores whole texts, so train on whole texts too
        batch = encode_qa(trained, [""] * len(items), [item_text(it) for it in items])
        return answer_nll(trained, batch).mean()

    fit(trained, loss, TrainConfig(steps=40, lr=3e-3))
    fresh = make_tiny_model(seed=1)
    result = membership_inference({"edited": trained, "retain": fresh}, target, MIAConfig(max_items=None), keep_scores=True, progress=False)
    f = result.frame
    by = f[f["metric"].str.startswith("mia_") & (f["metric"] != "mia_score")].set_index(["model", "metric"])["value"]
    for attack in ("loss", "zlib", "min_k", "min_k_plus_plus"):
        assert by[("edited", f"mia_{attack}")] > 0.9
    assert abs(by[("retain", "mia_loss")] - 0.5) < 0.35
    # the retain model as the reference: the trained model's forget NLL drops far below it
    assert by[("edited", "mia_reference")] > 0.9 and ("retain", "mia_reference") not in by.index
    leak = f[(f["metric"] == "privleak") & (f["model"] == "edited")]["value"]
    # MUSE's sign: a model whose forget set stands out as members reads near -100
    assert len(leak) == 1 and float(leak.iloc[0]) < -50
    assert set(f[f["metric"] == "mia_score"]["split"]) == {"forget", "holdout"}
    assert set(f["protocol"]) == {"mechunlearn"}


def _direct_logprobs(model, ids):
    with torch.no_grad():
        logits = model.forward(torch.tensor([ids]))[0, :-1].double()
    logp = torch.log_softmax(logits, -1)
    return logp, logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]


def test_tofu_protocol_scores_the_answer_with_eos_for_the_loss_and_without_for_min_k(target):
    model = make_tiny_model(seed=4)
    items = list(target.forget[:4])
    scores = mia_scores(model, items, MIAConfig(k=1.0), protocol="tofu", progress=False)
    for row, it in zip(scores.itertuples(), items):
        prompt = model.encode(it.prompt, prepend_bos=True)
        ids = prompt + model.encode(" " + it.answer) + [model.eos_token_id]
        _, tok = _direct_logprobs(model, ids)
        answer = tok[len(prompt) - 1 :]  # the answer's tokens, then EOS
        assert row.n_tokens == answer.numel()
        assert row.loss == pytest.approx(float(answer.mean()), rel=1e-5)  # EOS counted
        assert row.min_k == pytest.approx(float(answer[:-1].mean()), rel=1e-5)  # k = 1: EOS dropped
        assert row.zlib == pytest.approx(float(answer.mean()) / len(zlib.compress(it.answer.encode())), rel=1e-5)


def test_gradnorm_scores_match_autograd_and_leave_the_model_as_it_was(target):
    model = make_tiny_model(seed=5)
    items = list(target.forget[:2])
    params = list(model.bridge.parameters())
    got = gradnorm_scores(model, items, MIAConfig(), protocol="tofu", progress=False)
    assert all(not p.requires_grad and p.grad is None for p in params)
    for value, it in zip(got, items):
        prompt = model.encode(it.prompt, prepend_bos=True)
        ids = prompt + model.encode(" " + it.answer)  # tofu: EOS dropped from the token-wise loss
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            logits = model.forward(torch.tensor([ids + [model.eos_token_id]]))[0]
            lp = torch.log_softmax(logits.float(), -1)[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
            grads = torch.autograd.grad(-lp[len(prompt) - 1 :].mean(), params, allow_unused=True)
            for p in params:
                p.requires_grad_(False)
        norms = [float(g.norm()) for g in grads if g is not None]
        assert value == pytest.approx(-sum(norms) / len(norms), rel=1e-4)
