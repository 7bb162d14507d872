"""UNDO's noised student: the stated interpolation, its edges, and bad settings."""

from __future__ import annotations

import pytest
import torch

from mechunlearn.unlearn.undo import UndoConfig, noised_copy


def _weights():
    gen = torch.Generator().manual_seed(1)
    return {"a": torch.randn(200, 300, generator=gen) * 0.05 + 0.01, "b": torch.randn(500, generator=gen) * 2.0}


def test_noised_copy_edges():
    w = _weights()
    same = noised_copy(w, alpha=0.0, beta=1.0, seed=0)
    assert all(torch.equal(same[n], w[n]) for n in w)
    zero = noised_copy(w, alpha=1.0, beta=0.0, seed=0)
    assert all(torch.count_nonzero(zero[n]) == 0 for n in w)


def test_noised_copy_is_the_stated_interpolation():
    """(θ_S − (1−α)θ)/(αβ) must be zero-mean noise of the tensor's own spread, independent of θ."""
    w = _weights()
    alpha, beta = 0.3, 0.5
    out = noised_copy(w, alpha, beta, seed=3)
    for n, theta in w.items():
        noise = (out[n] - (1 - alpha) * theta) / (alpha * beta)
        assert abs(noise.mean().item()) < 0.1 * theta.std().item()
        assert noise.std().item() == pytest.approx(theta.std().item(), rel=0.1)
        corr = torch.corrcoef(torch.stack([noise.flatten(), theta.flatten()]))[0, 1].item()
        assert abs(corr) < 0.1
    again = noised_copy(w, alpha, beta, seed=3)
    assert all(torch.equal(again[n], out[n]) for n in w)
    assert not torch.equal(noised_copy(w, alpha, beta, seed=4)["a"], out["a"])


def test_bad_settings_fail_clearly():
    with pytest.raises(ValueError, match="alpha"):
        UndoConfig(alpha=1.5)
    with pytest.raises(ValueError, match="beta"):
        UndoConfig(beta=-1)
