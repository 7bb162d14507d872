"""LUNAR (Shen et al. 2025) on tiny models: the direction, the steering hook, the layer choice, the
closed-form and AdamW fits of W_out, and the one-matrix edit (exact revert, no hooks left)."""

from dataclasses import replace

import pandas as pd
import pytest
import torch

from mechunlearn.core.edit import DeltaEdit
from mechunlearn.locate.lunar import (
    LunarConfig,
    LunarData,
    activation_shift,
    answer_outcomes,
    choose_layer,
    classify_answer,
    compare_fits,
    fit_lunar_edit,
    fit_w_out,
    layer_selection,
    lunar,
    lunar_directions,
    mlp_rows,
    ridge_lambda,
    steer_edit,
    steering_sweep,
)
from mechunlearn.models.text import answer_nll, encode_qa
from mechunlearn.unlearn import TrainConfig, fit
from mechunlearn.verify.behavior import score_items
from mechunlearn.world.target import Item, Target

FORGET = tuple(Item(f"where was w{i} born ? answer :", f"w{i + 20}", subject=f"w{i}", attribute="city") for i in range(4))
RETAIN = tuple(Item(f"what year is w{i} ? answer :", f"w{i + 10}", subject=f"w{i}", attribute="year") for i in range(4, 12))
CANNOT = tuple(Item(f"where was w{i} w{i + 1} born ? answer :", "unknown", subject=f"w{i}", attribute="city") for i in range(30, 36))
TARGET = Target("toy", FORGET, RETAIN)


@pytest.fixture(scope="module")
def model():
    """A tiny random model, never mutated by the tests (edits are reverted)."""
    from tests.conftest import make_tiny_model

    return make_tiny_model(seed=3)


def weights(model):
    return {n: w.detach().clone() for n, w in model.named_weights()}


# ----------------------------------------------------------------- direction and steering
def test_direction_is_the_difference_of_last_token_means(model):
    dirs = lunar_directions(model, CANNOT, FORGET, progress=False)
    assert dirs.shape == (model.n_layers, model.d_model)
    for layer in range(model.n_layers):
        site = f"blocks.{layer}.hook_resid_post"
        means = []
        for group in (CANNOT, FORGET):
            acts = []
            for it in group:
                toks = model.to_tokens(it.prompt)
                _, cache = model.run_with_cache(toks, [site])
                acts.append(cache[site][0, -1])
            means.append(torch.stack(acts).mean(0))
        torch.testing.assert_close(dirs[layer], means[0] - means[1], atol=1e-5, rtol=1e-5)


def test_steering_hook_adds_only_at_the_last_prompt_token_and_leaves_no_hook(model):
    prompts = [FORGET[0].prompt, "what year is w3 ?"]
    tokens = model.to_tokens(prompts)
    lengths = [len(model.encode(p, prepend_bos=True)) for p in prompts]
    site = "blocks.1.hook_resid_post"
    vec = torch.randn(model.d_model)
    hooks = model.hook_count()
    _, before = model.run_with_cache(tokens, [site])
    with steer_edit(model, 1, vec, lengths).applied(model):
        _, after = model.run_with_cache(tokens, [site])
    assert model.hook_count() == hooks
    diff = after[site] - before[site]
    for i, n in enumerate(lengths):
        torch.testing.assert_close(diff[i, n - 1], vec, atol=1e-5, rtol=1e-5)
        mask = torch.ones(tokens.shape[1], dtype=torch.bool)
        mask[n - 1] = False
        assert diff[i, mask].abs().max() < 1e-6
    with pytest.raises(ValueError, match="shape"):
        steer_edit(model, 1, torch.zeros(3))


def test_classify_answer():
    assert classify_answer("w20 . the", "w20") == "correct"
    assert classify_answer(" unknown .", "w20") == "unknown"
    assert classify_answer("Sorry, I don't know who that is.", "Tokyo") == "unknown"
    assert classify_answer("w21", "w20", values=["w20", "w21"]) == "other_value"
    assert classify_answer("the the the", "w20", values=["w21"]) == "other"


def planted(model, layer: int) -> LunarData:
    """Directions that are 0 everywhere except ``layer``, where a large push along the unembedding
    of ``unknown`` makes the next token ``unknown``."""
    unk = model.tokenizer.convert_tokens_to_ids("unknown")
    w_u = model.weight("unembed.W_U")[:, unk].detach()
    dirs = torch.zeros(model.n_layers, model.d_model)
    dirs[layer] = 1e3 * (w_u - w_u.mean())
    return LunarData(dirs, FORGET, RETAIN, CANNOT)


def test_layer_choice_picks_the_planted_layer(model):
    hooks = model.hook_count()
    sweep = steering_sweep(model, planted(model, 1), LunarConfig(coef=1.0, sweep_fit=False), progress=False)
    assert model.hook_count() == hooks
    share = sweep[(sweep["split"] == "forget") & (sweep["metric"] == "share_unknown")].set_index(["mode", "layer"])["value"]
    assert share[("steer", 1)] == 1.0
    assert share[("steer", 0)] == share[("none", -1)] == 0.0  # a zero direction changes nothing
    assert choose_layer(sweep) == 1
    assert layer_selection(sweep).top(1)[0].site.name == "blocks.1.hook_resid_post"
    # shares of every (mode, layer, split) sum to one
    sums = sweep.groupby(["mode", "layer", "split"])["value"].sum()
    assert ((sums - 1).abs() < 1e-9).all()


def test_choose_layer_uses_the_fitted_edits_when_present():
    rows = []
    for layer, (unk, ret) in enumerate([(0.9, 0.5), (0.8, 0.95), (0.2, 1.0)]):
        rows += [
            {"layer": layer, "coef": 2.0, "mode": "edit", "split": "forget", "metric": "share_unknown", "value": unk},
            {"layer": layer, "coef": 2.0, "mode": "edit", "split": "forget", "metric": "share_correct", "value": 1 - unk},
            {"layer": layer, "coef": 2.0, "mode": "edit", "split": "retain", "metric": "share_correct", "value": ret},
        ]
    assert choose_layer(pd.DataFrame(rows)) == 1
    # a tie on forget and retain accuracy is broken by retain answers turned unknown
    tie = []
    for layer, ret_unk in enumerate([0.2, 0.0]):
        tie += [
            {"layer": layer, "coef": 2.0, "mode": "edit", "split": "forget", "metric": "share_unknown", "value": 1.0},
            {"layer": layer, "coef": 2.0, "mode": "edit", "split": "forget", "metric": "share_correct", "value": 0.0},
            {"layer": layer, "coef": 2.0, "mode": "edit", "split": "retain", "metric": "share_correct", "value": 0.7},
            {"layer": layer, "coef": 2.0, "mode": "edit", "split": "retain", "metric": "share_unknown", "value": ret_unk},
        ]
    assert choose_layer(pd.DataFrame(tie)) == 1
    with pytest.raises(ValueError, match="columns"):
        choose_layer(pd.DataFrame({"layer": [0]}))


# ----------------------------------------------------------------- the fit
def random_problem(seed=0, nf=12, nr=40, d_mlp=16, d_model=6):
    g = torch.Generator().manual_seed(seed)
    hf, hr = torch.randn(nf, d_mlp, generator=g), torch.randn(nr, d_mlp, generator=g)
    rf, rr = torch.randn(nf, d_model, generator=g), 0.1 * torch.randn(nr, d_model, generator=g)
    return hf, rf, hr, rr


@pytest.mark.parametrize("ridge,alpha", [(1e-3, 1.0), (0.3, 2.5)])
def test_ridge_solves_the_normal_equations_like_lstsq(ridge, alpha):
    hf, rf, hr, rr = random_problem()
    fit = fit_w_out(hf, rf, hr, rr, ridge=ridge, retain_weight=alpha)
    lam = ridge_lambda(hf, hr, ridge, alpha)
    nf, nr = hf.shape[0], hr.shape[0]
    hf64, hr64, rf64, rr64 = (t.double() for t in (hf, hr, rf, rr))
    # the weighted ridge problem as one ordinary least-squares problem on an augmented system
    a = torch.cat([hf64 / nf**0.5, hr64 * (alpha / nr) ** 0.5, lam**0.5 * torch.eye(hf.shape[1], dtype=torch.float64)])
    b = torch.cat([rf64 / nf**0.5, rr64 * (alpha / nr) ** 0.5, torch.zeros(hf.shape[1], rf.shape[1], dtype=torch.float64)])
    ref = torch.linalg.lstsq(a, b).solution
    torch.testing.assert_close(fit.delta.double(), ref, atol=1e-5, rtol=1e-4)
    # and the gradient of J vanishes there: (G + λI)Δ = rhs
    gram = hf64.T @ hf64 / nf + alpha * hr64.T @ hr64 / nr + lam * torch.eye(hf.shape[1], dtype=torch.float64)
    rhs = hf64.T @ rf64 / nf + alpha * hr64.T @ rr64 / nr
    torch.testing.assert_close(gram @ fit.delta.double(), rhs, atol=1e-5, rtol=1e-4)
    assert fit.method == "ridge" and fit.steps == 0


def test_adamw_through_the_one_loop_converges_to_the_ridge_solution(model):
    layer = 1
    hf, rf, hr, _ = random_problem(seed=1, nf=10, nr=50, d_mlp=model.d_mlp, d_model=model.d_model)
    before = weights(model)
    ridge = fit_w_out(hf, rf, hr, None, ridge=0.1)
    adam = fit_w_out(hf, rf, hr, None, ridge=0.1, method="adamw", steps=300, lr=1e-2, model=model, layer=layer)
    assert all(torch.equal(before[n], w) for n, w in model.named_weights()), "the AdamW fit must restore W_out"
    assert adam.steps == 300
    assert ridge.objective <= adam.objective <= ridge.objective * 1.01
    assert float((adam.delta - ridge.delta).norm() / ridge.delta.norm()) < 0.05
    with pytest.raises(ValueError, match="model= and layer="):
        fit_w_out(hf, rf, hr, None, method="adamw")


def test_fit_rejects_bad_input(model):
    hf, rf, hr, rr = random_problem()
    with pytest.raises(ValueError, match="must match"):
        fit_w_out(hf, rf[:3], hr, rr)
    with pytest.raises(ValueError, match="no forget rows"):
        fit_w_out(hf[:0], rf[:0], hr, rr)
    with pytest.raises(ValueError, match="method"):
        fit_w_out(hf, rf, hr, rr, method="sgd")
    with pytest.raises(ValueError, match="method"):
        LunarConfig(method="sgd")
    with pytest.raises(ValueError, match="out of range"):
        lunar_directions(model, CANNOT, FORGET, layers=[5], progress=False)


# ----------------------------------------------------------------- the edit
def test_edit_is_one_w_out_that_redirects_forget_and_reverts_bitwise(model):
    data = LunarData(lunar_directions(model, CANNOT, FORGET, progress=False), FORGET, RETAIN, CANNOT)
    cfg = LunarConfig(coef=2.0, ridge=1e-6)
    before = weights(model)
    start_hash = model.weights_hash()
    hooks = model.hook_count()
    edit, fit = fit_lunar_edit(model, data, 1, cfg)
    assert isinstance(edit, DeltaEdit) and list(edit.deltas) == ["blocks.1.mlp.W_out"]
    assert model.weights_hash() == start_hash and model.hook_count() == hooks
    # 4 forget rows in a 64-dim hidden space: the redirection is met almost exactly
    assert fit.forget_error < 0.05
    base = mlp_rows(model, 1, [it.prompt for it in FORGET])
    with edit.applied(model) as handle:
        assert handle.weights == ("blocks.1.mlp.W_out",)
        changed = [n for n, w in model.named_weights() if not torch.equal(before[n], w)]
        assert changed == ["blocks.1.mlp.W_out"]
        after = mlp_rows(model, 1, [it.prompt for it in FORGET])
        assert model.hook_count() == hooks
    target = base.out + 2.0 * data.directions[1]
    assert float((after.out - target).norm() / (target - base.out).norm()) < 0.05
    assert model.weights_hash() == start_hash
    assert all(torch.equal(before[n], w) for n, w in model.named_weights())


@pytest.fixture(scope="module")
def trained():
    """A tiny model that has memorised the toy facts and answers "unknown" to the CANNOT
    questions, so LUNAR has something to redirect (never mutated by the tests)."""
    from tests.conftest import make_tiny_model

    model = make_tiny_model(seed=3)
    items = FORGET + RETAIN + CANNOT
    batch = encode_qa(model, [i.prompt for i in items], [i.answer for i in items])
    fit(model, lambda step: answer_nll(model, batch).mean(), TrainConfig(steps=80, lr=2e-2), desc="memorise toy")
    assert score_items(model, items, progress=False)["exact_match"].mean() == 1.0
    return model


def test_lunar_end_to_end_redirects_leaves_no_hooks_and_reports(trained):
    model = trained
    hooks, start_hash = model.hook_count(), model.weights_hash()
    cfg = LunarConfig(sweep_items=4, retain_items=8, adamw_steps=50)
    result = lunar(model, TARGET, cfg, cannot=CANNOT, progress=False)
    assert model.hook_count() == hooks and model.weights_hash() == start_hash
    # LUNAR's outcome: every forget answer turns to the model's own "unknown", retain stays correct
    assert (answer_outcomes(model, FORGET)["outcome"] == "correct").all()
    forget = answer_outcomes((model, result.edit), FORGET)["outcome"]
    assert (forget == "unknown").all()
    assert (answer_outcomes((model, result.edit), RETAIN)["outcome"] == "correct").mean() >= 0.75
    # the returned edit is the one the sweep measured at the chosen layer
    row = result.sweep.query("mode == 'edit' and split == 'forget' and metric == 'share_unknown' and layer == @result.layer")
    assert len(row) == 1 and float(row["value"].iloc[0]) == pytest.approx(float((forget == "unknown").mean()))
    # a given layer is used as given, without a sweep
    pinned = lunar(model, TARGET, replace(cfg, layer=1), cannot=CANNOT, progress=False)
    assert pinned.layer == 1 and pinned.sweep is None and list(pinned.edit.deltas) == ["blocks.1.mlp.W_out"]
    assert (answer_outcomes((model, pinned.edit), FORGET)["outcome"] == "unknown").all()
    assert set(result.sweep["mode"]) == {"none", "steer", "edit"}
    assert list(result.edit.deltas) == [f"blocks.{result.layer}.mlp.W_out"]
    table, edits = compare_fits(model, result.data, result.layer, cfg)
    assert list(table["method"]) == ["ridge", "adamw"] and table.loc[0, "rel_dist_to_ridge"] == 0.0
    shift = activation_shift(model, edits["ridge"], result.layer, {"forget": FORGET, "retain": RETAIN}, result.data.directions[result.layer])
    assert set(shift["split"]) == {"forget", "retain"} and len(shift) == len(FORGET) + len(RETAIN)
    # the forget shift points along +r (the fit asks for +c·r on those rows)
    assert (shift[shift["split"] == "forget"]["shift_along"] > 0).all()
    from mechunlearn.figures import redirection as figs

    assert len(figs.steering_sweep(result.sweep).data) > 0
    assert len(figs.activation_shift(shift).data) == 2  # one histogram per split
    with pytest.raises(ValueError, match="columns"):
        figs.activation_shift(shift.drop(columns="split"))
    outcomes = answer_outcomes((model, result.edit), FORGET)
    assert set(outcomes["outcome"]) <= {"correct", "unknown", "other_value", "other"}
    assert model.hook_count() == hooks and model.weights_hash() == start_hash
    with pytest.raises(ValueError, match="cannot answer"):
        lunar(model, TARGET, cfg, progress=False)  # a tiny model has no built-in refusal prompts
