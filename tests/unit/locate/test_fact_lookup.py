"""Probe-guided fact-lookup localisation (Guo et al. 2024) on a tiny model: the probe profile, the
rise and the layer choice, matched-budget masks, and a masked fine-tune that leaves every other
weight exactly equal."""

import pandas as pd
import pytest
import torch

from mechunlearn.core.selection import MaskSelection
from mechunlearn.locate.fact_lookup import (
    FactLookupConfig,
    best_position,
    changed_parameters,
    choose_fact_layers,
    compare_layer_choices,
    compare_localisations,
    fact_lookup,
    fact_lookup_selection,
    fact_lookup_unlearn,
    layer_probe_profile,
    layer_rise,
    mlp_mask,
    mlp_weight_names,
    random_layer_mask,
    random_weight_mask,
)
from mechunlearn.locate.tracing import attribution_patch
from mechunlearn.unlearn import UnlearnConfig
from mechunlearn.verify.probes import ProbeConfig
from tests.unit.locate.conftest import planted_lookup
from tests.unit.verify.conftest import toy_target


@pytest.fixture(scope="module")
def model():
    from tests.conftest import make_tiny_model

    return make_tiny_model(seed=5, n_layers=3)


def profile_frame(means: dict[int, float]) -> pd.DataFrame:
    rows = []
    for layer, m in means.items():
        for attribute, offset in (("a", -0.05), ("b", 0.05)):
            rows.append({"position": "question", "layer": layer, "attribute": attribute, "split": "retain", "value": m + offset, "chance": 0.2, "n_items": 10})
            # the subject position stays at chance: auto must not pick it
            rows.append({"position": "subject", "layer": layer, "attribute": attribute, "split": "retain", "value": 0.2, "chance": 0.2, "n_items": 10})
    return pd.DataFrame(rows)


def test_rise_and_layer_choice_pick_the_planted_jump():
    # accuracy jumps at layer 2 (0.3 -> 0.8), a smaller jump at layer 0
    profile = profile_frame({-1: 0.2, 0: 0.3, 1: 0.3, 2: 0.8, 3: 0.85})
    assert best_position(profile) == "question"
    assert layer_rise(profile, position="subject").abs().max() < 1e-12
    rise = layer_rise(profile)
    assert list(rise.index) == [0, 1, 2, 3]
    assert rise.round(6).tolist() == [0.1, 0.0, 0.5, 0.05]
    assert choose_fact_layers(profile, n_layers=1) == [2]
    assert choose_fact_layers(profile, n_layers=2) == [0, 2]
    assert choose_fact_layers(profile, n_layers=None, min_rise=0.08) == [0, 2]
    assert choose_fact_layers(profile, n_layers=None, min_rise=0.9) == [2]  # at least the largest
    assert fact_lookup_selection(profile).top(1)[0].site.name == "blocks.2.mlp.W_out"
    with pytest.raises(ValueError, match="asked for 5 layers"):
        choose_fact_layers(profile, n_layers=5)
    with pytest.raises(ValueError, match="layer -1"):
        layer_rise(profile[profile["layer"] >= 0])
    with pytest.raises(ValueError, match="split"):
        layer_rise(profile, split="forget")


def birth_cities(target):
    return [it for it in target.forget + target.retain + target.holdout if it.attribute == "birth_city"]


def test_profile_finds_a_planted_lookup_layer(model):
    target = toy_target()
    cfg = FactLookupConfig(probe=ProbeConfig(attributes=("birth_city",), templates_per_fact=2, max_iter=100))
    with planted_lookup(model, birth_cities(target), layer=1).applied(model):
        planted = layer_probe_profile(model, target, cfg)
    assert choose_fact_layers(planted, n_layers=1) == [1]
    rise = layer_rise(planted)
    assert rise[1] > 0.4 and rise[1] > rise[0] + 0.3 and rise[1] > rise[2] + 0.3
    assert fact_lookup_selection(planted).sites[0].name == "blocks.1.mlp.W_out"


def test_mean_ablation_of_later_attention_moves_the_choice_to_the_lookup_mlp(model):
    # layer 1's attention writes the city into the subject's token (as if moved there from
    # elsewhere); layer 2's MLP looks it up. Unablated, the probes see it first after layer 1;
    # with attention from layer 1 on mean-ablated only the MLP's lookup is left.
    target = toy_target()
    cities = birth_cities(target)
    probe = ProbeConfig(attributes=("birth_city",), positions=("subject",), templates_per_fact=2, max_iter=100)
    planted = planted_lookup(model, cities, 1, component="attn") + planted_lookup(model, cities, 2, component="mlp")
    with planted.applied(model):
        plain = layer_probe_profile(model, target, FactLookupConfig(probe=probe, position="subject"))
        ablated = layer_probe_profile(model, target, FactLookupConfig(probe=probe, position="subject", ablate_attention_from=1))
    assert model.hook_count() == 0
    assert choose_fact_layers(plain, n_layers=1, position="subject") == [1]
    assert choose_fact_layers(ablated, n_layers=1, position="subject") == [2]
    assert layer_rise(ablated, position="subject")[1] < 0.1 < layer_rise(ablated, position="subject")[2] - 0.3
    with pytest.raises(ValueError, match="out of range"):
        layer_probe_profile(model, target, FactLookupConfig(probe=probe, position="subject", ablate_attention_from=3))


def test_compare_layer_choices_at_the_same_number_of_layers(model):
    target = toy_target()
    cities = birth_cities(target)
    probe = ProbeConfig(attributes=("birth_city",), positions=("subject",), templates_per_fact=2, max_iter=100)
    with planted_lookup(model, cities, 1, directions="unembed").applied(model):
        profile = layer_probe_profile(model, target, FactLookupConfig(probe=probe, position="subject"))
        patch = attribution_patch(model, [it for it in target.forget if it.attribute == "birth_city"], components=["mlp"], samples=2, progress=False)
    table = compare_layer_choices(profile, patch, 1, position="subject")
    assert list(table.columns) == ["method", "rank", "layer", "score", "chosen", "shared"]
    chosen = table[table["chosen"]].set_index("method")["layer"]
    assert chosen.to_dict() == {"fact_lookup": 1, "attribution_patching": 1}
    assert table["shared"].sum() == 2 and (table.groupby("method")["chosen"].sum() == 1).all()
    two = compare_layer_choices(profile, patch, 2, position="subject")
    assert (two.groupby("method")["chosen"].sum() == 2).all()
    with pytest.raises(ValueError, match="asked for 4 layers"):
        compare_layer_choices(profile, patch, 4, position="subject")


def test_profile_reuses_the_batched_probes(model):
    target = toy_target()
    cfg = FactLookupConfig(probe=ProbeConfig(templates_per_fact=2, max_iter=50))
    profile = layer_probe_profile(model, target, cfg)
    assert sorted(profile["layer"].unique()) == [-1, 0, 1, 2]
    assert set(profile["position"]) == {"subject", "question"}
    assert set(profile["attribute"]) == {"birth_city", "employer", "work_city"}
    assert profile["value"].between(0, 1).all()
    assert set(profile["split"]) >= {"train", "retain", "forget", "holdout"}
    from mechunlearn.figures.redirection import probe_layers

    fig = probe_layers(profile[profile["position"] == "question"], chosen=[1])
    assert len(fig.data) == profile["split"].nunique() and len(fig.layout.shapes) >= 1
    with pytest.raises(ValueError, match="needs probes"):
        FactLookupConfig(position="subject", probe=ProbeConfig(positions=("question",)))
    with pytest.raises(ValueError, match="position"):
        FactLookupConfig(position="middle")


def test_masks_have_matched_budgets(model):
    fact = mlp_mask(model, [1])
    names = mlp_weight_names(model, [1])
    assert fact.names == names and all(n.startswith("blocks.1.mlp.") for n in names)
    budget = sum(model.weight(n).numel() for n in names)
    fact.assert_count_is(budget)
    rnd = random_layer_mask(model, 1, exclude=[1], seed=0)
    rnd.assert_count_is(budget)
    assert all(not n.startswith("blocks.1.") for n in rnd.names)
    scattered = random_weight_mask(model, budget, seed=0)
    scattered.assert_count_is(budget)
    assert len({n.split(".")[1] for n in scattered.names if int(scattered.masks[n].sum())}) == model.n_layers
    with pytest.raises(ValueError, match="out of range"):
        mlp_mask(model, [7])
    with pytest.raises(ValueError, match="budget"):
        random_weight_mask(model, 0)


def test_masked_fine_tune_keeps_every_other_weight_exactly(model):
    target = toy_target()
    before = {n: w.detach().clone() for n, w in model.named_weights()}
    start = model.weights_hash()
    mask = mlp_mask(model, [1])
    cfg = UnlearnConfig(loss="forget_prob", loss_options={"retain_weight": 1.0}, steps=5, lr=1e-2, batch_size=8, stop_forget_em=None)
    edit = fact_lookup_unlearn(model, target, mask, cfg)
    assert model.weights_hash() == start
    assert set(edit.deltas) == set(mask.names)
    with edit.applied(model):
        changed = {n for n, w in model.named_weights() if not torch.equal(before[n], w)}
        assert changed and changed <= set(mlp_weight_names(model, [1]))
    assert model.weights_hash() == start
    assert 0 < changed_parameters(model, edit) <= len(mask)
    # a sparse mask: entries outside it stay bitwise equal even inside the trained tensors
    sparse = random_weight_mask(model, 500, seed=1)
    edit = fact_lookup_unlearn(model, target, sparse, cfg)
    with edit.applied(model):
        for n, w in model.named_weights():
            keep = sparse.masks.get(n)
            outside = torch.ones_like(w, dtype=torch.bool) if keep is None else ~keep
            assert torch.equal(w[outside], before[n][outside]), n
    with pytest.raises(TypeError, match="MaskSelection"):
        fact_lookup_unlearn(model, target, ["blocks.1.mlp.W_out"], cfg)


def test_compare_localisations_table(model):
    target = toy_target()
    cfg = FactLookupConfig(unlearn=UnlearnConfig(loss="forget_prob", steps=3, lr=1e-2, batch_size=8, stop_forget_em=None))
    table, runs = compare_localisations(model, target, [2], cfg, progress=False)
    assert list(dict.fromkeys(table["method"])) == ["fact_lookup", "attribution_patching", "random_layers", "random_weights", "full"]
    budgets = table.drop_duplicates("method").set_index("method")["budget"]
    assert budgets["fact_lookup"] == budgets["attribution_patching"] == budgets["random_layers"] == budgets["random_weights"] < budgets["full"]
    picked = cfg.attribution.top_layers(model, target, 1, progress=False)
    assert runs["attribution_patching"].mask.names == mlp_weight_names(model, picked)
    assert table.drop_duplicates("method").set_index("method")["layers"]["attribution_patching"] == str(picked[0])
    assert set(table["split"]) == {"forget", "retain"} and table["value"].between(0, 1).all()
    assert isinstance(runs["fact_lookup"].mask, MaskSelection) and runs["full"].mask is None
    with pytest.raises(ValueError, match="unknown comparators"):
        compare_localisations(model, target, [2], cfg, methods=["nope"])


def test_fact_lookup_end_to_end(model):
    target = toy_target()
    start = model.weights_hash()
    cfg = FactLookupConfig(
        probe=ProbeConfig(templates_per_fact=2, max_iter=50),
        unlearn=UnlearnConfig(loss="forget_prob", steps=3, lr=1e-2, batch_size=8, stop_forget_em=None),
    )
    result = fact_lookup(model, target, cfg)
    assert model.weights_hash() == start
    assert len(result.layers) == 1 and result.position in ("subject", "question")
    assert result.layers == tuple(choose_fact_layers(result.profile, n_layers=1, position=result.position))
    assert set(result.edit.deltas) == set(mlp_weight_names(model, result.layers))
