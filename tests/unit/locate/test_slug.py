import math

import numpy as np
import pytest
import torch

from mechunlearn.core.registry import from_dict
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.locate.saliency import gradients
from mechunlearn.locate.slug import SlugConfig, pareto_front, search_step, slug, step_edit, tensor_stats
from mechunlearn.models.text import answer_nll, encode_qa
from mechunlearn.unlearn import TrainConfig, fit
from mechunlearn.verify.behavior import score_items
from mechunlearn.world.target import Item, Target

FORGET = tuple(Item(f"where was w{i} born ?", f"w{i + 20}", subject=f"w{i}") for i in range(3))
RETAIN = tuple(Item(f"what year is w{i} ?", f"w{i + 10}", subject=f"w{i}") for i in range(3, 15))
TARGET = Target("toy", FORGET, RETAIN)


@pytest.fixture(scope="module")
def trained_model():
    """A tiny model that has memorised the toy facts (never mutated by the tests)."""
    from tests.conftest import make_tiny_model

    model = make_tiny_model(seed=1)
    items = FORGET + RETAIN
    batch = encode_qa(model, [i.prompt for i in items], [i.answer for i in items])
    fit(model, lambda step: answer_nll(model, batch).mean(), TrainConfig(steps=60, lr=2e-2), desc="memorise toy")
    assert score_items(model, items, progress=False)["exact_match"].mean() == 1.0
    return model


# ----------------------------------------------------------------- Pareto front
def dominates(j, i, hi, lo):
    return hi[j] >= hi[i] and lo[j] <= lo[i] and (hi[j] > hi[i] or lo[j] < lo[i])


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_is_exactly_the_non_dominated_set(seed):
    rng = np.random.default_rng(seed)
    hi, lo = rng.random(40), rng.random(40)
    hi[5], lo[5] = hi[3], lo[3]  # a duplicate point
    hi[7] = hi[2]  # a tie in one coordinate
    front = pareto_front(hi, lo)
    for i in range(len(hi)):
        dominated = any(dominates(j, i, hi, lo) for j in range(len(hi)))
        assert front[i] == (not dominated)
        if not front[i]:  # something on the front dominates it
            assert any(dominates(j, i, hi, lo) for j in np.flatnonzero(front))
    assert front[3] == front[5]


def test_pareto_front_small_cases():
    assert pareto_front([3.0, 2.0, 1.0], [0.1, 0.2, 0.3]).tolist() == [True, False, False]
    assert pareto_front([3.0, 2.0, 1.0], [0.3, 0.2, 0.1]).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="same length"):
        pareto_front([1.0, 2.0], [1.0])


# ----------------------------------------------------------------- step search
@pytest.mark.parametrize("threshold", [1e-3, 0.013, 0.1, 0.37, 5.0])
def test_search_finds_smallest_passing_step_on_monotone_toy(threshold):
    passes = lambda lam: lam >= threshold  # noqa: E731
    found = search_step(passes, start=0.1, iterations=10, max_expand=8)
    assert found.passed and passes(found.step)
    # bracket width <= the larger bracket end / 2, bisected 10 times
    assert found.step - threshold <= found.step / 2 ** 10
    # every trial is consistent with the criterion and the answer is the smallest passing trial
    assert all(ok == passes(lam) for lam, ok in found.trials)
    assert found.step == min(lam for lam, ok in found.trials if ok)


def test_search_reports_failure_and_tiny_passes():
    never = search_step(lambda lam: False, start=1.0, iterations=10, max_expand=3)
    assert not never.passed and never.step == 8.0 and len(never.trials) == 4
    always = search_step(lambda lam: True, start=1.0, iterations=10, max_expand=3)
    assert always.passed and always.step == 1.0 / 8 and len(always.trials) == 4
    with pytest.raises(ValueError, match="> 0"):
        search_step(lambda lam: True, start=0.0)


# ----------------------------------------------------------------- importance, alignment
def test_tensor_stats_formulas(trained_model):
    names = trained_model.weight_names("matrices")
    grads = gradients(trained_model, TARGET, names, progress=False)
    stats = tensor_stats(trained_model, grads).set_index("name")
    assert list(stats.index) == names
    for n in names:
        g_f, g_r, theta = grads.forget[n], grads.retain[n], trained_model.weight(n)
        assert stats.loc[n, "importance"] == pytest.approx(float(g_f.norm() / theta.norm()), rel=1e-5)
        cos = float(torch.nn.functional.cosine_similarity(g_f.reshape(-1), g_r.reshape(-1), dim=0))
        assert stats.loc[n, "alignment"] == pytest.approx(abs(cos), rel=1e-4, abs=1e-6)
    assert stats["alignment"].between(0, 1).all() and stats["pareto"].any()


def test_locate_returns_the_pareto_tensors(trained_model):
    cfg = SlugConfig()
    sel = cfg.locate(trained_model, TARGET, progress=False)
    stats = tensor_stats(trained_model, cfg.gradients(trained_model, TARGET, progress=False), cfg.weight_names(trained_model))
    assert sorted(str(s) for s in sel.sites) == sorted(stats.loc[stats["pareto"], "name"])
    assert list(sel.scores) == sorted(sel.scores, reverse=True)
    assert "alignment" in sel.to_frame().columns
    assert isinstance(from_dict(LOCALIZERS, {"name": "slug", "forget_threshold": 0.0}), SlugConfig)


# ----------------------------------------------------------------- the edit
def test_slug_unlearns_with_one_tensor_and_leaves_the_model_unchanged(trained_model):
    before = trained_model.weights_hash()
    cfg = SlugConfig(forget_threshold=0.0, iterations=6, max_expand=10)
    result = slug(trained_model, TARGET, cfg, progress=False)
    assert trained_model.weights_hash() == before, "every trial must be reverted exactly"
    assert set(result.table["name"]) == set(result.stats.loc[result.stats["pareto"], "name"])
    assert result.chosen is not None and result.table["chosen"].sum() == 1
    row = result.table.set_index("name").loc[result.chosen]
    assert row["passed"] and row["forget_em"] == 0.0
    assert row["retain_em"] == result.table.loc[result.table["passed"], "retain_em"].max()
    assert row["rel_step"] == pytest.approx(row["step"] * row["grad_norm"] / row["weight_norm"])
    edit = result.edit
    assert edit.site.name == result.chosen and edit.op == "add"
    grads = cfg.gradients(trained_model, TARGET, progress=False)
    torch.testing.assert_close(edit.value, row["step"] * grads.forget[result.chosen])
    with edit.applied(trained_model) as handle:
        assert handle.weights == (result.chosen,)
        assert score_items(trained_model, list(FORGET), progress=False)["exact_match"].mean() == 0.0
    assert trained_model.weights_hash() == before
    # the direction is ascent on the forget NLL: the step raises it
    batch = encode_qa(trained_model, [i.prompt for i in FORGET], [i.answer for i in FORGET])
    with torch.no_grad():
        nll = answer_nll(trained_model, batch).mean()
        with step_edit(result.chosen, grads.forget[result.chosen], 0.1 * row["step"]).applied(trained_model):
            assert answer_nll(trained_model, batch).mean() > nll


def test_slug_bad_input():
    with pytest.raises(ValueError, match="forget_threshold"):
        SlugConfig(forget_threshold=1.5)
    with pytest.raises(ValueError, match="init_step"):
        SlugConfig(init_step=0)
    with pytest.raises(ValueError, match="data must be"):
        SlugConfig(data="bios")


def test_pareto_and_tradeoff_figures(trained_model):
    import pandas as pd

    from mechunlearn.figures.weight_space import slug_pareto, tradeoff

    cfg = SlugConfig()
    stats = tensor_stats(trained_model, cfg.gradients(trained_model, TARGET, progress=False), cfg.weight_names(trained_model))
    chosen = stats.loc[stats["pareto"], "name"].iloc[0]
    fig = slug_pareto(stats, chosen=chosen)
    assert any(t.name == f"chosen: {chosen}" for t in fig.data)
    with pytest.raises(ValueError, match="not in the stats"):
        slug_pareto(stats, chosen="blocks.9.mlp.W_in")
    runs = pd.DataFrame({"method": ["a", "a", "a", "b"], "forget": [0.0, 0.5, 0.6, 0.1], "retain": [0.5, 0.9, 0.8, 0.95]})
    fig = tradeoff(runs)
    fronts = [t for t in fig.data if t.name == "a front"]
    assert len(fronts) == 1 and list(fronts[0].x) == [0.0, 0.5]  # (0.6, 0.8) is dominated


def test_weight_deltas_of_one_step_and_composed_edits(trained_model):
    from mechunlearn.core.edit import WeightEdit
    from mechunlearn.figures.weight_space import delta_by_layer, weight_deltas

    name = "blocks.1.mlp.W_out"
    before = trained_model.weights_hash()
    direction = gradients(trained_model, TARGET, [name], retain=False, progress=False).forget[name]
    frame = weight_deltas(trained_model, step_edit(name, direction, 2.0), method="step")
    value = frame[(frame["weight_name"] == name) & (frame["metric"] == "delta_frobenius")]["value"]
    assert float(value.iloc[0]) == pytest.approx(2.0 * float(direction.norm()), rel=1e-4)
    # a composed edit (noise on one row, then a step on the tensor) is traced as its net change
    composed = WeightEdit(f"{name}[3]", "noise", sigma=0.5) + step_edit("blocks.0.attn.W_Q", torch.ones(trained_model.weight("blocks.0.attn.W_Q").shape), 0.01)
    frame = weight_deltas(trained_model, composed, method="composed")
    density = frame[(frame["weight_name"] == name) & (frame["metric"] == "delta_density")]["value"]
    assert float(density.iloc[0]) == pytest.approx(1 / trained_model.weight(name).shape[0])
    assert set(frame.loc[frame["weight"] != "all", "weight_name"]) == {name, "blocks.0.attn.W_Q"}
    assert trained_model.weights_hash() == before
    fig = delta_by_layer(frame)
    assert {t.name for t in fig.data} == {"mlp", "attn"}
