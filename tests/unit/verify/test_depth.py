"""Patching depth on two tiny models whose knowledge we know: the original learned the forget and
retain facts, the oracle (same initialisation) only the retain facts."""

import numpy as np
import pytest
import torch

from mechunlearn.core.edit import DeltaEdit
from mechunlearn.models.text import answer_nll, encode_qa
from mechunlearn.unlearn import TrainConfig, fit
from mechunlearn.verify.behavior import score_items
from mechunlearn.verify.depth import DepthConfig, depth_scores, oracle_drops, patching_depth
from mechunlearn.world.target import Item, Target

FORGET = tuple(Item(f"where was w{i} born ?", f"w{i + 24}", subject=f"w{i}") for i in range(4))
RETAIN = tuple(Item(f"what year is w{i} ?", f"w{i + 10}", subject=f"w{i}") for i in range(4, 12))
TARGET = Target("toy", FORGET, RETAIN)


def trained(items):
    from tests.conftest import make_tiny_model

    model = make_tiny_model(seed=5)
    batch = encode_qa(model, [i.prompt for i in items], [i.answer for i in items])
    fit(model, lambda step: answer_nll(model, batch).mean(), TrainConfig(steps=80, lr=2e-2), desc="memorise toy")
    return model


@pytest.fixture(scope="module")
def models():
    original, oracle = trained(FORGET + RETAIN), trained(RETAIN)
    assert score_items(original, FORGET, progress=False)["exact_match"].mean() == 1.0
    assert score_items(oracle, FORGET, progress=False)["exact_match"].mean() == 0.0
    return original, oracle


def to_oracle(original, oracle):
    """Exact unlearning as an edit: the original's weights moved onto the oracle's."""
    return DeltaEdit({n: oracle.weight(n) - original.weight(n) for n in original.weight_names()}, label="to oracle")


def readout_hiding(original):
    """The forget answers' unembedding columns pushed down; every hidden state is the original's."""
    ids = sorted({original.encode(f" {it.answer}")[-1] for it in FORGET})
    w_u = torch.zeros_like(original.weight("unembed.W_U"))
    w_u[:, ids] = -3.0 * original.weight("unembed.W_U")[:, ids].sign()
    return DeltaEdit({"unembed.W_U": w_u}, label="readout")


def nothing(model):
    return DeltaEdit({"blocks.0.mlp.W_out": torch.zeros_like(model.weight("blocks.0.mlp.W_out"))}, label="nothing")


def values(frame, metric, role):
    rows = frame[(frame["metric"] == metric) & (frame["model"] == role)]
    return rows.set_index("layer")["value"]


def test_depth_tells_removal_from_a_readout_that_hides(models):
    original, oracle = models
    before = original.weights_hash()
    removal, hiding = to_oracle(original, oracle), readout_hiding(original)
    with hiding.applied(original):
        assert score_items(original, FORGET, progress=False)["exact_match"].mean() == 0.0  # behaviour says forgotten
    f = patching_depth({"original": original, "retain": oracle, "removed": (original, removal), "hidden": (original, hiding)}, TARGET, DepthConfig(min_signal=0.5)).frame
    assert original.weights_hash() == before
    drop = values(f, "patch_drop", "retain")
    assert list(drop.index) == [0, 1] and (drop > 0.5).all()  # both layers hold the forget facts
    score = values(f, "depth_score", "removed").iloc[0], values(f, "depth_score", "hidden").iloc[0]
    assert score[0] == pytest.approx(1.0, abs=1e-4) and score[1] == pytest.approx(0.0, abs=1e-4)
    assert (values(f, "patch_depth", "hidden") == 0).all()
    # the logit lens reads the answer at the last layer of the original, not of the oracle
    assert values(f, "lens_top1", "original")[1] == 1.0 and values(f, "lens_top1", "retain")[1] == 0.0


def test_the_oracle_stage_is_computed_once_per_pair_of_weights(models):
    original, oracle = models
    oracle_drops.cache.clear()
    config = DepthConfig(min_signal=0.5)
    first = patching_depth({"original": original, "retain": oracle, "edited": (original, nothing(original))}, TARGET, config).frame
    assert len(oracle_drops.cache) == 1
    again = patching_depth({"original": original, "retain": oracle}, TARGET, config).frame
    assert len(oracle_drops.cache) == 1
    assert np.allclose(values(first, "patch_drop", "retain"), values(again, "patch_drop", "retain"))
    assert values(first, "depth_score", "edited").iloc[0] == pytest.approx(0.0, abs=1e-6)  # an edit that changes nothing
    # another oracle is another key
    patching_depth({"original": original, "retain": trained(RETAIN[:4])}, TARGET, config)
    assert len(oracle_drops.cache) == 2


def test_depth_scores_weight_layers_by_the_oracle_signal_and_skip_quiet_ones():
    knowledge, depth, score = depth_scores(np.array([0.05, 1.0, 3.0]), np.array([0.05, 0.5, 3.6]), 0.1)
    assert list(knowledge) == [False, True, True] and np.isnan(depth[0])
    assert depth[1:].tolist() == [0.5, 1.0]  # clipped at 1
    assert score == pytest.approx((1.0 * 0.5 + 3.0 * 1.0) / 4.0)
    assert np.isnan(depth_scores(np.array([0.01]), np.array([0.0]), 0.1)[2])


def test_bad_roles_and_configs_say_what_to_fix(models):
    original, oracle = models
    with pytest.raises(ValueError, match="'original' and 'retain'"):
        patching_depth({"original": original}, TARGET)
    with pytest.raises(TypeError, match="separately trained"):
        patching_depth({"original": original, "retain": (original, nothing(original))}, TARGET)
    with pytest.raises(ValueError, match="layers must be"):
        patching_depth({"original": original, "retain": oracle}, TARGET, DepthConfig(layers=(5,)))
    with pytest.raises(ValueError, match="min_signal"):
        DepthConfig(min_signal=0)


def test_the_card_runs_depth_on_request_and_its_verdicts_tell_removed_from_hidden(models):
    from mechunlearn.verify.card import CardConfig, card_verdicts, evaluation_card
    from mechunlearn.verify.verdict import VerdictConfig

    original, oracle = models
    removal = to_oracle(original, oracle)
    config = CardConfig(sections=("behavior", "depth"), depth=DepthConfig(min_signal=0.5))
    card = evaluation_card({"removed": (original, removal), "hidden": (original, readout_hiding(original))}, original, oracle, TARGET, config)
    v = card_verdicts(card, VerdictConfig(min_checks=1)).set_index("model")
    assert v.loc["removed", "verdict"] == "removed"
    assert v.loc["hidden", "verdict"] == "hidden" and v.loc["hidden", "failed"] == "patching depth"
    # without the oracle the section is skipped, with the reason
    alone = evaluation_card((original, removal), original, None, TARGET, config)
    assert "retain model" in alone.provenance["skipped"]["depth"] and "depth" not in set(alone.frame["section"])
