import math

import pytest
import torch

from mechunlearn.core.registry import from_dict
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.locate.saliency import (
    MagnitudeScore,
    RandomScore,
    SalUnSaliency,
    SnipScore,
    WagleAttribution,
    gradients,
    score_all,
)
from mechunlearn.models.text import answer_nll, encode_qa
from mechunlearn.world.target import Item, Target

FORGET = tuple(Item(f"where was w{i} born ?", f"w{i + 20} w{i + 21}", subject=f"w{i}") for i in range(7))
RETAIN = tuple(Item(f"what year is w{i} ?", f"w{i + 10}", subject=f"w{i}") for i in range(7, 19))
TARGET = Target("toy", FORGET, RETAIN)
NAMES = ["blocks.0.attn.W_Q", "blocks.0.attn.b_V", "blocks.1.mlp.W_in", "blocks.1.mlp.W_out"]


def manual_mean_grad(model, items, names):
    """∇θ of the mean summed-answer NLL over all items in one batch, in TL layout."""
    specs = [model.weight_spec(n) for n in names]
    params = list({id(s.param): s.param for s in specs}.values())
    for p in params:
        p.requires_grad_(True)
    try:
        batch = encode_qa(model, [i.prompt for i in items], [i.answer for i in items])
        torch.autograd.backward(answer_nll(model, batch).mean())
        return {s.name: s.to_tl(s.param.grad).clone() for s in specs}
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None


def test_batched_gradient_equals_gradient_of_the_whole_loss(tiny_model):
    want = manual_mean_grad(tiny_model, FORGET, NAMES)
    for batch_size in (1, 3, 64):
        got = gradients(tiny_model, TARGET, NAMES, batch_size=batch_size, retain=False, progress=False)
        assert got.retain is None and got.n_forget == len(FORGET)
        for n in NAMES:
            assert got.forget[n].shape == tiny_model.weight(n).shape
            torch.testing.assert_close(got.forget[n], want[n], rtol=1e-4, atol=1e-7)
    # the gradient pass leaves nothing behind
    assert all(not p.requires_grad and p.grad is None for p in tiny_model.bridge.parameters())


def test_salun_is_abs_forget_gradient_and_independent_of_batch_size(tiny_model):
    want = manual_mean_grad(tiny_model, FORGET, NAMES)
    for batch_size in (2, 5):
        scores = SalUnSaliency(family=tuple(NAMES), batch_size=batch_size).locate(tiny_model, TARGET, progress=False)
        assert scores.names == NAMES and len(scores) == scores.total  # scores only, nothing thresholded
        for n in NAMES:
            torch.testing.assert_close(scores.scores[n], want[n].abs(), rtol=1e-4, atol=1e-7)


def test_wagle_formula_and_gamma_to_infinity_is_snip(tiny_model):
    grads = gradients(tiny_model, TARGET, NAMES, progress=False)
    snip = SnipScore(family=tuple(NAMES)).locate(tiny_model, TARGET, grads=grads)
    gamma = 1e-3
    wagle = WagleAttribution(family=tuple(NAMES), gamma=gamma).locate(tiny_model, TARGET, grads=grads)
    for n in NAMES:
        theta = tiny_model.weight(n)
        torch.testing.assert_close(wagle.scores[n], ((theta - grads.retain[n] / gamma) * grads.forget[n]).abs())
        assert not torch.allclose(wagle.scores[n], snip.scores[n])
    exact = WagleAttribution(family=tuple(NAMES), gamma=math.inf).locate(tiny_model, TARGET, grads=grads)
    near = WagleAttribution(family=tuple(NAMES), gamma=1e30).locate(tiny_model, TARGET, grads=grads)
    for n in NAMES:
        assert torch.equal(exact.scores[n], snip.scores[n])
        torch.testing.assert_close(near.scores[n], snip.scores[n], rtol=1e-6, atol=1e-20)


def test_wagle_small_gamma_ranks_by_retain_forget_product(tiny_model):
    grads = gradients(tiny_model, TARGET, NAMES, progress=False)
    scorer = WagleAttribution(family=tuple(NAMES), gamma=1e-12, keep_ratio=0.1)
    mask = scorer.select(scorer.locate(tiny_model, TARGET, grads=grads))
    flat = torch.cat([(grads.retain[n] * grads.forget[n]).abs().reshape(-1) for n in NAMES])
    threshold = flat.topk(len(mask)).values.min()
    for n in NAMES:
        assert bool(((grads.retain[n] * grads.forget[n]).abs()[mask.masks[n]] >= threshold * (1 - 1e-5)).all())


def test_retain_subset_is_seeded(tiny_model):
    a = gradients(tiny_model, TARGET, NAMES[:1], retain_items=5, seed=1, progress=False)
    b = gradients(tiny_model, TARGET, NAMES[:1], retain_items=5, seed=1, progress=False)
    c = gradients(tiny_model, TARGET, NAMES[:1], retain_items=5, seed=2, progress=False)
    assert a.n_retain == 5
    assert torch.equal(a.retain[NAMES[0]], b.retain[NAMES[0]])
    assert not torch.equal(a.retain[NAMES[0]], c.retain[NAMES[0]])


def test_keep_ratio_global_and_per_tensor(tiny_model):
    scores = MagnitudeScore(family="mlp").locate(tiny_model, TARGET)
    assert all(".mlp." in n for n in scores.names) and scores.names
    for n in scores.names:
        assert torch.equal(scores.scores[n], tiny_model.weight(n).abs())
    glob = MagnitudeScore(family="mlp", keep_ratio=0.2).select(scores)
    assert len(glob) == math.ceil(0.2 * scores.total)
    # globally, every kept weight outscores every dropped one
    kept = torch.cat([scores.scores[n][glob.masks[n]] for n in scores.names])
    dropped = torch.cat([scores.scores[n][~glob.masks[n]] for n in scores.names])
    assert kept.min() >= dropped.max()
    per = MagnitudeScore(family="mlp", keep_ratio=0.2, per_tensor=True).select(scores)
    for n in scores.names:
        assert int(per.masks[n].sum()) == math.ceil(0.2 * scores.scores[n].numel())
    # the small biases lose out globally but keep their share per tensor
    assert per.masks["blocks.0.mlp.b_out"].sum() > glob.masks["blocks.0.mlp.b_out"].sum()


def test_random_scores_are_seeded():
    from tests.conftest import make_tiny_model

    m = make_tiny_model()
    a = RandomScore(seed=3).locate(m, TARGET)
    b = RandomScore(seed=3).locate(m, TARGET)
    c = RandomScore(seed=4).locate(m, TARGET)
    n = a.names[0]
    assert torch.equal(a.scores[n], b.scores[n]) and not torch.equal(a.scores[n], c.scores[n])
    assert a.meta["localizer"] == "random" and a.meta["config"]["seed"] == 3


def test_salun_mask_beats_random_mask_at_the_same_ratio(tiny_model):
    """To first order, a masked ascent step raises the forget loss by lr·Σ_mask g², which the
    saliency mask maximises: check it on the real model against a random mask."""
    names = tiny_model.weight_names("no_embed")
    grads = gradients(tiny_model, TARGET, names, retain=False, progress=False)
    masks = {
        "salun": SalUnSaliency(keep_ratio=0.05).mask(tiny_model, TARGET, grads=grads),
        "random": RandomScore(keep_ratio=0.05).mask(tiny_model, TARGET),
    }
    assert len(masks["salun"]) == len(masks["random"])
    batch = encode_qa(tiny_model, [i.prompt for i in FORGET], [i.answer for i in FORGET])
    with torch.no_grad():
        before = answer_nll(tiny_model, batch).mean()
    rise = {}
    for key, mask in masks.items():
        originals = {n: tiny_model.weight(n).clone() for n in names}
        with torch.no_grad():
            for n in names:
                tiny_model.weight(n).add_(1e-2 * grads.forget[n] * mask.masks[n])
            rise[key] = float(answer_nll(tiny_model, batch).mean() - before)
            for n in names:
                tiny_model.weight(n).copy_(originals[n])
    assert rise["salun"] > 0 and rise["salun"] > 5 * abs(rise["random"])


def test_score_all_shares_one_pass(tiny_model):
    scorers = {"salun": SalUnSaliency(family=tuple(NAMES)), "wagle": WagleAttribution(family=tuple(NAMES[:2])), "magnitude": MagnitudeScore()}
    together = score_all(tiny_model, TARGET, scorers, progress=False)
    for key, scorer in scorers.items():
        alone = scorer.locate(tiny_model, TARGET, progress=False)
        assert together[key].names == alone.names
        for n in alone.names:
            torch.testing.assert_close(together[key].scores[n], alone.scores[n])
    with pytest.raises(ValueError, match="same data"):
        score_all(tiny_model, TARGET, {"a": SalUnSaliency(), "b": SalUnSaliency(data="texts")})


def test_registry_and_from_dict():
    for name in ("salun", "wagle", "snip", "magnitude", "random"):
        assert name in LOCALIZERS
    scorer = from_dict(LOCALIZERS, {"name": "wagle", "gamma": 1e-6, "keep_ratio": 0.4, "per_tensor": True})
    assert isinstance(scorer, WagleAttribution) and scorer.gamma == 1e-6 and scorer.per_tensor
    with pytest.raises(KeyError, match="already registered"):
        LOCALIZERS.add("wagle", WagleAttribution)


def test_bad_input_is_a_clear_error(tiny_model):
    with pytest.raises(ValueError, match="keep_ratio"):
        SalUnSaliency(keep_ratio=0.0)
    with pytest.raises(ValueError, match="gamma"):
        WagleAttribution(gamma=0.0)
    with pytest.raises(ValueError, match="data must be"):
        SnipScore(data="bios")
    with pytest.raises(ValueError, match="unknown weight family"):
        SalUnSaliency(family="mlps").locate(tiny_model, TARGET)
    with pytest.raises(KeyError, match="no weight"):
        SalUnSaliency(family=("blocks.0.mlp.W_up",)).locate(tiny_model, TARGET)
    forget_only = gradients(tiny_model, TARGET, NAMES, retain=False, progress=False)
    with pytest.raises(ValueError, match="retain gradients"):
        WagleAttribution(family=tuple(NAMES)).locate(tiny_model, TARGET, grads=forget_only)
    with pytest.raises(ValueError, match="lack weights"):
        SalUnSaliency(family="mlp").locate(tiny_model, TARGET, grads=forget_only)
    with pytest.raises(ValueError, match="no forget texts"):
        gradients(tiny_model, TARGET, NAMES, data="texts")


def test_mask_density_figure(tiny_model):
    import pandas as pd

    from mechunlearn.figures.weight_space import mask_density

    masks = {"salun": SalUnSaliency(keep_ratio=0.1).mask(tiny_model, TARGET), "random": RandomScore(keep_ratio=0.1).mask(tiny_model, TARGET)}
    frame = pd.concat([m.to_frame().assign(method=k) for k, m in masks.items()])
    fig = mask_density(frame)
    assert {t.name for t in fig.data} >= {"attn", "mlp"}
    with pytest.raises(ValueError, match="density"):
        mask_density(frame.drop(columns="density"))
