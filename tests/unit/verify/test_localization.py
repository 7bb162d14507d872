import numpy as np
import pytest
import torch

from mechunlearn.core.selection import MaskSelection
from mechunlearn.verify.localization import auroc, oracle_scores, random_scores, score_localizer, truth_units


def _truth():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.zeros(64, dtype=torch.bool)
    hidden[torch.randperm(64, generator=gen)[:8]] = True
    masks = {"blocks.0.mlp.W_in": hidden.expand(16, 64).clone(), "blocks.0.mlp.b_in": hidden.clone(),
             "blocks.0.mlp.W_out": hidden[:, None].expand(64, 16).clone(), "blocks.1.mlp.b_in": torch.zeros(64, dtype=torch.bool)}
    return MaskSelection({n: m.float() for n, m in masks.items()}, masks)


@pytest.mark.parametrize("granularity", ["entries", "neurons"])
def test_oracle_reads_one_and_random_reads_half(granularity):
    S = _truth()
    assert score_localizer(oracle_scores(S, granularity), S, granularity)["auroc"] == 1.0
    assert score_localizer(oracle_scores(S, granularity), S, granularity)["precision_at_s"] == 1.0
    mean = np.mean([score_localizer(random_scores(S, granularity, seed=s), S, granularity)["auroc"] for s in range(20)])
    assert abs(mean - 0.5) < 0.05


def test_auroc_ties_and_inverted():
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert auroc(np.array([0.0, 1.0, 2.0]), np.array([True, False, False])) == 0.0
    with pytest.raises(ValueError):
        auroc(np.array([1.0]), np.array([True]))


def test_neuron_truth_counts_planted_units():
    units = truth_units(_truth(), "neurons")
    assert sum(units.values()) == 8 and len(units) == 128
