import pytest
import torch

from mechunlearn.core.selection import MaskSelection
from mechunlearn.unlearn import TrainConfig, UnlearnConfig, fit, make_loss, unlearn
from mechunlearn.verify.behavior import score_items
from mechunlearn.world.target import Item, Target
from tests.conftest import dtype_recording_loss

FORGET = tuple(Item(f"where was w{i} born ?", f"w{i + 20}", subject=f"w{i}") for i in range(4))
RETAIN = tuple(Item(f"what year is w{i} ?", f"w{i + 10}", subject=f"w{i}") for i in range(4, 12))
TARGET = Target("toy", FORGET, RETAIN)


def logprob(m, items):
    return score_items(m, items, progress=False)["answer_logprob"].mean()


@pytest.mark.parametrize("loss", ["ga", "graddiff", "npo", "simnpo", "forget_prob"])
def test_losses_lower_forget_likelihood_and_revert(tiny_model, loss):
    m = tiny_model
    before_hash, before = m.weights_hash(), logprob(m, FORGET)
    # the forget term alone (retain terms are tested below)
    cfg = UnlearnConfig(loss=loss, loss_options={"retain_weight": 0.0}, steps=15, lr=3e-3, stop_forget_em=None, batch_size=4)
    edit = unlearn(m, TARGET, cfg)
    assert m.weights_hash() == before_hash, "unlearn() must leave the model as it found it"
    with edit.applied(m):
        after = logprob(m, FORGET)
    assert after < before - 0.5
    assert m.weights_hash() == before_hash
    assert edit.meta["steps"] == 15


def test_retain_term_protects_retain_items(tiny_model):
    m = tiny_model
    before = logprob(m, RETAIN)
    common = dict(steps=15, lr=3e-3, stop_forget_em=None, batch_size=4)
    ga = unlearn(m, TARGET, UnlearnConfig(loss="ga", **common))
    gd = unlearn(m, TARGET, UnlearnConfig(loss="graddiff", loss_options={"retain_weight": 1.0}, **common))
    with ga.applied(m):
        after_ga = logprob(m, RETAIN)
    with gd.applied(m):
        after_gd = logprob(m, RETAIN)
    assert after_gd > after_ga and after_gd > before


def _resid(model, items, layer):
    from mechunlearn.models.text import encode_qa

    batch = encode_qa(model, [i.prompt for i in items], [i.answer for i in items])
    _, cache = model.run_with_cache(batch.tokens, [f"blocks.{layer}.hook_resid_post"])
    act = cache[f"blocks.{layer}.hook_resid_post"]
    content = batch.attention_mask.to(act.device).clone()
    if model.prepend_bos:  # BOS is shared by forget and retain inputs: the retain term holds it
        content[:, 0] = False
    return act[content]  # [real tokens, d_model]


@pytest.mark.parametrize("autocast", ["float32", "bfloat16"])
def test_rmu_steers_forget_activations_to_c_u_and_keeps_retain_ones(tiny_model, autocast):
    # bfloat16: autocast caches its casts of the weights inside one forward region, so the frozen
    # reference (the original values swapped in, then the trained ones back) must not reuse them
    m = tiny_model
    # u: RMU's fixed random unit direction, drawn from its seed (Li et al. 2024, Sec. 5)
    u = torch.rand(m.d_model, generator=torch.Generator().manual_seed(0))
    u = u / u.norm()
    forget0, retain0 = _resid(m, FORGET, 1), _resid(m, RETAIN, 1)
    cfg = UnlearnConfig(loss="rmu", loss_options={"layer": 1, "c_scale": 4.0, "alpha": 10.0}, steps=60, lr=1e-2, stop_forget_em=None, batch_size=4, autocast=autocast)
    edit = unlearn(m, TARGET, cfg)
    assert set(edit.deltas) == {"blocks.0.mlp.W_out", "blocks.1.mlp.W_out"}  # layers ℓ-2..ℓ
    with edit.applied(m):
        forget1, retain1 = _resid(m, FORGET, 1), _resid(m, RETAIN, 1)
    cos = torch.nn.functional.cosine_similarity
    assert cos(forget0, u[None]).mean() < 0.5 < 0.9 < cos(forget1, u[None]).mean()
    # the forget activations grew to about c = 4 × their mean norm, along u
    assert forget1.norm(dim=-1).mean() > 2.5 * forget0.norm(dim=-1).mean()
    forget_moved = (forget1 - forget0).norm(dim=-1).mean()
    retain_moved = (retain1 - retain0).norm(dim=-1).mean()
    assert retain_moved < 0.2 * forget_moved


def test_mask_keeps_delta_exactly_zero_outside_with_decay_and_momentum(tiny_model):
    m = tiny_model
    names = ["blocks.0.mlp.W_in", "blocks.1.mlp.W_out"]
    g = torch.Generator().manual_seed(0)
    mask = MaskSelection({n: torch.rand(m.weight(n).shape, generator=g) for n in names}).frac(0.3)
    cfg = UnlearnConfig(loss="graddiff", steps=12, lr=1e-2, weight_decay=0.5, stop_forget_em=None, batch_size=4)
    edit = unlearn(m, TARGET, cfg, mask=mask)
    for n in names:
        delta = edit.dense(n)
        assert torch.count_nonzero(delta[~mask.masks[n]]) == 0, n
        assert torch.count_nonzero(delta[mask.masks[n]]) > 0, n
    before = {n: m.weight(n).clone() for n in names}
    with edit.applied(m):
        for n in names:
            assert torch.equal(m.weight(n)[~mask.masks[n]], before[n][~mask.masks[n]])


@pytest.mark.parametrize("loss, weights", [("rmu", UnlearnConfig.weights), ("graddiff", "mlp")])
def test_a_mask_bounds_every_loss_even_with_wider_weights(tiny_model, loss, weights):
    """Δθ = 0 outside the mask for every loss: RMU's default layers and a `weights` family wider
    than the mask train only the mask's entries (the leak: RMU changed all of blocks.0's W_out)."""
    m = tiny_model
    name = "blocks.1.mlp.W_out"
    mask = MaskSelection({name: torch.rand(m.weight(name).shape, generator=torch.Generator().manual_seed(1))}).frac(0.1)
    before = {n: m.weight(n).clone() for n in m.weight_names()}
    options = {"layer": 1, "alpha": 1.0} if loss == "rmu" else {}
    cfg = UnlearnConfig(loss=loss, loss_options=options, weights=weights, steps=8, lr=1e-2, weight_decay=0.1, stop_forget_em=None, batch_size=4)
    edit = unlearn(m, TARGET, cfg, mask=mask)
    assert set(edit.deltas) == {name}
    assert edit.deltas[name].shape == (len(mask),)  # only the masked entries are stored
    with edit.applied(m):
        changed = {n for n in before if not torch.equal(m.weight(n), before[n])}
        assert changed == {name}
        outside = ~mask.masks[name]
        assert torch.equal(m.weight(name)[outside], before[name][outside])
        assert torch.count_nonzero(m.weight(name)[mask.masks[name]] - before[name][mask.masks[name]]) > 0


def test_masked_training_keeps_optimiser_state_at_the_mask_size(tiny_model, monkeypatch):
    m = tiny_model
    name = "blocks.0.mlp.W_in"
    mask = MaskSelection({name: torch.rand(m.weight(name).shape, generator=torch.Generator().manual_seed(2))}).top(50)
    optimisers = []
    real = torch.optim.AdamW

    def spy(params, **kwargs):
        opt = real(params, **kwargs)
        optimisers.append(opt)
        return opt

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    fit(m, lambda step: m.forward(torch.tensor([[1, 2, 3]])).logsumexp(-1).mean(), TrainConfig(steps=2, lr=1e-2, autocast="float32"), mask=mask)
    (opt,) = optimisers
    sizes = [t.numel() for state in opt.state.values() for k, t in state.items() if k in ("exp_avg", "exp_avg_sq")]
    assert sizes == [50, 50]
    assert m.weight_spec(name).param.grad is None  # no dense gradient is kept


def test_early_stopping_on_forget_criterion(tiny_model):
    cfg = UnlearnConfig(loss="ga", steps=200, lr=1e-2, stop_forget_em=0.0, stop_every=5, batch_size=4)
    edit = unlearn(tiny_model, TARGET, cfg)
    assert edit.meta["steps"] < 200 and edit.meta["stopped_early"]


def test_nan_loss_is_a_clear_error(tiny_model):
    with pytest.raises(FloatingPointError, match="lower the learning rate"):
        fit(tiny_model, lambda step: torch.tensor(float("nan"), requires_grad=True), TrainConfig(steps=2), weights=["blocks.0.mlp.W_in"])


def test_bad_loss_options_list_the_fields():
    with pytest.raises(TypeError, match="beta"):
        make_loss("npo", betta=0.2)
    with pytest.raises(KeyError, match="known losss?: .*graddiff"):
        make_loss("gradient-descent")


def test_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=10, schedule="cosine", min_lr_ratio=0.1)
    assert cfg.lr_at(0) == pytest.approx(0.1)
    assert cfg.lr_at(10) == pytest.approx(1.0)
    assert cfg.lr_at(99) == pytest.approx(0.1, abs=0.01)
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(steps=5, warmup=5)


def test_bfloat16_autocast_runs_the_forward_in_bf16_and_keeps_float32_weights(tiny_model):
    m = tiny_model
    loss, seen = dtype_recording_loss(m)
    with pytest.raises(ValueError, match="autocast"):
        TrainConfig(autocast="fp16")
    before = m.weight("blocks.0.mlp.W_in").clone()
    bf16 = fit(m, loss, TrainConfig(steps=2, lr=1e-3, autocast="bfloat16"), weights=["blocks.0.mlp.W_in"])
    fp32 = fit(m, loss, TrainConfig(steps=1, lr=1e-3, autocast="float32"), weights=["blocks.0.mlp.W_in"])
    assert seen == [torch.bfloat16, torch.bfloat16, torch.float32]
    assert (bf16.precision.autocast, fp32.precision.autocast) == ("bfloat16", "float32")
    assert bf16.precision.reason == "explicit setting"
    assert m.weight("blocks.0.mlp.W_in").dtype == torch.float32
    assert not torch.equal(m.weight("blocks.0.mlp.W_in"), before)
    with torch.no_grad():
        m.weight("blocks.0.mlp.W_in").copy_(before)


def test_a_retain_term_without_retain_data_is_an_error_not_ga(tiny_model):
    texts_only = Target("texts", FORGET, RETAIN, forget_texts=("w1 was born in w21 .",))
    no_retain = Target("no-retain", FORGET, ())
    common = dict(steps=2, lr=1e-3, stop_forget_em=None, batch_size=4)
    for target, data in ((no_retain, "items"), (texts_only, "texts")):
        for loss in ("graddiff", "simnpo", "rmu"):
            with pytest.raises(ValueError, match="no retain"):
                unlearn(tiny_model, target, UnlearnConfig(loss=loss, data=data, **common))
    # the explicit choice still runs: the forget term alone
    edit = unlearn(tiny_model, texts_only, UnlearnConfig(loss="graddiff", data="texts", loss_options={"retain_weight": 0.0}, **common))
    assert edit.meta["steps"] == 2


def test_the_early_stop_scores_forget_questions_not_texts(tiny_model, monkeypatch):
    import mechunlearn.unlearn.unlearner as unlearner

    scored = []

    def spy(model, items):
        scored.append(list(items))
        return 1.0

    monkeypatch.setattr(unlearner, "forget_exact_match", spy)
    target = Target("both", FORGET, RETAIN, forget_texts=("w1 was born in w21 .", "w2 was born in w22 ."), retain_texts=("w5 is w15 .",))
    unlearn(tiny_model, target, UnlearnConfig(loss="ga", data="both", steps=4, stop_every=2, stop_forget_em=0.1, batch_size=4))
    assert scored and all(items == list(FORGET) for items in scored)
    answer_only = Target("answer-only", (Item("", "w1 was born in w21 ."),), ())  # texts, no questions
    with pytest.raises(ValueError, match="stop_forget_em=None"):
        unlearn(tiny_model, answer_only, UnlearnConfig(loss="ga", steps=4, stop_forget_em=0.1))


@pytest.mark.parametrize(
    "options,message",
    [
        ({"weights": ()}, "non-empty tuple"),
        ({"batch_size": 0}, "batch_size"),
        ({"stop_every": 0}, "stop_every"),
        ({"stop_items": 0}, "stop_items"),
        ({"stop_forget_em": 1.5}, "exact-match level"),
        ({"data": "docs"}, "data must be"),
        ({"loss": "gradient-descent"}, "unknown loss"),
        ({"steps": 0}, "steps must be"),
    ],
)
def test_unlearn_config_is_validated(options, message):
    with pytest.raises(ValueError, match=message):
        UnlearnConfig(**options)


def test_a_failure_mid_training_restores_the_weights(tiny_model, monkeypatch):
    import mechunlearn.unlearn.unlearner as unlearner

    before = tiny_model.weights_hash()
    calls = {"n": 0}
    real = unlearner.encode_qa

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # step 3's forget batch (each step encodes a forget and a retain batch)
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(unlearner, "encode_qa", failing)
    with pytest.raises(RuntimeError, match="disk on fire"):
        unlearn(tiny_model, TARGET, UnlearnConfig(loss="graddiff", steps=10, lr=1e-2, stop_forget_em=None, batch_size=4))
    assert calls["n"] == 7  # three optimiser steps had changed the weights
    assert tiny_model.weights_hash() == before
