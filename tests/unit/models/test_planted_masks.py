"""Planted component sets S (`plant_mask`), the low-rank merge, saving S beside the values, and
the `bios-tiny-planted-<type>` names, on the tiny random model (no training world needed)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from mechunlearn.models.planted import (
    DEFAULT_RECIPES, PLANT_TYPES, PlantRecipe, _fit_low_rank, default_recipe, plant_mask, planted_selection, read_planted,
    restore, save_planted,
)
from mechunlearn.unlearn.loop import TrainConfig
from tests.conftest import make_tiny_model

# the tiny model: d_model 32, 4 heads of d_head 8, d_mlp 64, 2 layers


def test_neurons_are_whole_columns_of_w_in_entries_of_b_in_and_rows_of_w_out(tiny_model):
    S = plant_mask(tiny_model, PlantRecipe(kind="neurons", layer=1, k=5))
    assert set(S.names) == {"blocks.1.mlp.W_in", "blocks.1.mlp.b_in", "blocks.1.mlp.W_out"}
    w_in, b_in, w_out = S.masks["blocks.1.mlp.W_in"], S.masks["blocks.1.mlp.b_in"], S.masks["blocks.1.mlp.W_out"]
    units = b_in.nonzero().flatten()
    assert len(units) == 5
    assert torch.equal(w_in.all(0).nonzero().flatten(), units) and not w_in.any(0)[~b_in].any()
    assert torch.equal(w_out.all(1).nonzero().flatten(), units) and not w_out.any(1)[~b_in].any()
    assert len(S) == 5 * (32 + 1 + 32)


def test_a_layer_is_the_whole_mlp_of_one_block(tiny_model):
    S = plant_mask(tiny_model, PlantRecipe(kind="layer", layer=0))
    assert set(S.names) == {"blocks.0.mlp.W_in", "blocks.0.mlp.b_in", "blocks.0.mlp.W_out", "blocks.0.mlp.b_out"}
    assert all(m.all() for m in S.masks.values())
    assert len(S) == 32 * 64 + 64 + 64 * 32 + 32


def test_heads_are_whole_head_slices_of_q_k_v_o(tiny_model):
    S = plant_mask(tiny_model, PlantRecipe(kind="heads", layer=1, k=2))
    assert {n.split(".")[-1] for n in S.names} == {"W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V"}
    heads = S.masks["blocks.1.attn.W_Q"].flatten(1).all(1)
    assert int(heads.sum()) == 2
    for name, mask in S.masks.items():
        per_head = mask.flatten(1)
        assert torch.equal(per_head.all(1), heads) and not per_head[~heads].any(), name
    assert len(S) == 2 * (4 * 32 * 8 + 3 * 8)


def test_heads_layers_draws_k_heads_in_each_named_block(tiny_model):
    S = plant_mask(tiny_model, PlantRecipe(kind="heads", layer=1, heads_layers=(0, 1), k=1))
    assert {n.split(".")[1] for n in S.names} == {"0", "1"}
    for block in (0, 1):
        assert int(S.masks[f"blocks.{block}.attn.W_O"].flatten(1).all(1).sum()) == 1
    assert len(S) == 2 * (4 * 32 * 8 + 3 * 8)
    with pytest.raises(ValueError, match="heads_layers has block 2"):
        plant_mask(tiny_model, PlantRecipe(kind="heads", heads_layers=(0, 2), k=1))


def test_sparse_is_about_one_percent_of_every_block_weight_and_nothing_else(tiny_model):
    S = plant_mask(tiny_model, PlantRecipe(kind="sparse", density=0.01))
    block = [n for n in tiny_model.weight_names() if n.startswith("blocks.") and ".ln" not in n]
    assert set(S.names) == set(block)
    assert 0.008 < len(S) / S.total < 0.012
    other = plant_mask(tiny_model, PlantRecipe(kind="sparse", density=0.01, seed=1))
    assert any(not torch.equal(S.masks[n], other.masks[n]) for n in block)


def test_low_rank_selects_one_whole_matrix_and_checks_it(tiny_model):
    S = plant_mask(tiny_model, PlantRecipe(kind="low_rank", layer=1, matrix="mlp.W_in", rank=4))
    assert S.names == ["blocks.1.mlp.W_in"] and S.masks["blocks.1.mlp.W_in"].all()
    with pytest.raises(ValueError, match="2-D matrix"):
        plant_mask(tiny_model, PlantRecipe(kind="low_rank", matrix="attn.W_Q"))
    with pytest.raises(ValueError, match="rank must be in 1..31"):
        plant_mask(tiny_model, PlantRecipe(kind="low_rank", matrix="mlp.W_out", rank=32))


def test_bad_recipes_are_refused(tiny_model):
    with pytest.raises(ValueError, match="unknown plant type 'rows'"):
        PlantRecipe(kind="rows")
    with pytest.raises(ValueError, match="layer 2 out of range"):
        plant_mask(tiny_model, PlantRecipe(kind="layer", layer=2))
    with pytest.raises(ValueError, match="k must be in 1..64"):
        plant_mask(tiny_model, PlantRecipe(kind="neurons", k=65))
    with pytest.raises(ValueError, match="1..4 heads"):
        plant_mask(tiny_model, PlantRecipe(kind="heads", k=5))
    with pytest.raises(ValueError, match="unknown plant type 'rows'"):
        default_recipe("rows")


def test_every_plant_type_has_a_default_recipe_of_its_own_kind():
    assert set(DEFAULT_RECIPES) == set(PLANT_TYPES)
    assert all(DEFAULT_RECIPES[k].kind == k for k in PLANT_TYPES)


def test_the_full_world_gets_its_own_recipe_where_one_was_measured():
    from mechunlearn.models.bios_tiny import BiosTinyRecipe

    small, full = default_recipe("layer", BiosTinyRecipe().small()), default_recipe("layer", BiosTinyRecipe())
    assert small is DEFAULT_RECIPES["layer"] and full.train.steps > small.train.steps and full.kind == "layer"
    assert default_recipe("neurons", BiosTinyRecipe()) is DEFAULT_RECIPES["neurons"]  # none measured: the small world's
    assert default_recipe("layer").train.autocast == "float32"  # the same planted model on every CPU


@pytest.mark.parametrize("matrix", ["mlp.W_in", "mlp.W_out"])
def test_the_low_rank_merge_is_a_rank_r_delta_on_one_matrix_equal_to_u_v(tiny_model, matrix):
    before = {n: w.clone() for n, w in tiny_model.named_weights()}
    recipe = PlantRecipe(kind="low_rank", layer=0, matrix=matrix, rank=3, train=TrainConfig(steps=5, lr=1e-2, autocast=None))
    S = plant_mask(tiny_model, recipe)
    tokens = torch.tensor([[1, 5, 6, 7, 8], [1, 9, 10, 11, 12]])

    def loss(step):
        return -tiny_model.forward(tokens).log_softmax(-1)[:, :-1].gather(-1, tokens[:, 1:, None]).mean()

    factors = _fit_low_rank(tiny_model, loss, recipe, S)
    name = f"blocks.0.{matrix}"
    changed = [n for n, w in tiny_model.named_weights() if not torch.equal(w, before[n])]
    assert changed == [name]
    delta = tiny_model.weight(name) - before[name]
    assert torch.linalg.matrix_rank(delta, rtol=1e-4) == 3
    assert torch.allclose(delta, factors["U"] @ factors["V"], atol=1e-6)
    assert tiny_model.hook_count() == 0  # the adapters' hooks are gone


def test_saved_values_and_s_rebuild_the_planted_model_and_restore_gives_the_oracle(tmp_path, tiny_model):
    oracle_hash = tiny_model.weights_hash()
    S = plant_mask(tiny_model, PlantRecipe(kind="neurons", layer=0, k=3))
    S = type(S)(S.scores, S.masks, dict(S.meta, oracle_values={n: tiny_model.weight(n)[m].clone() for n, m in S.masks.items()}))
    with torch.no_grad():
        for n, m in S.masks.items():
            tiny_model.weight(n)[m] += 0.5
    tiny_model.meta["weights_hash"] = tiny_model.weights_hash()
    import pandas as pd

    save_planted(tmp_path, tiny_model, S, pd.DataFrame({"gate": ["forget_trained"], "exact_match": [1.0]}))
    fresh, S2 = read_planted(tmp_path, make_tiny_model())
    assert fresh.weights_hash() == tiny_model.meta["weights_hash"]
    assert S2.names == S.names and all(torch.equal(S2.masks[n], S.masks[n]) for n in S.names)
    restore(fresh, S2)
    assert fresh.weights_hash() == oracle_hash


def test_planted_selection_refuses_a_model_that_is_not_planted(tiny_model):
    with pytest.raises(ValueError, match="not a planted model"):
        planted_selection(tiny_model)


@pytest.mark.parametrize("name", ["bios-tiny-planted-rows", "bios-tiny-planted", "bios-tiny-planted-"])
def test_unknown_plant_types_are_a_clear_error(name):
    from mechunlearn.models import load_model

    with pytest.raises(ValueError, match="bios-tiny-planted-<type> with a type among neurons, layer, sparse, heads, low_rank"):
        load_model(name)


def test_planted_names_reach_load_planted_with_their_type_and_options(monkeypatch):
    from mechunlearn.models import load_model, planted

    calls = []
    monkeypatch.setattr(planted, "load_planted", lambda kind, **kw: calls.append((kind, kw)) or ("model", "S"))
    plant = replace(DEFAULT_RECIPES["low_rank"], rank=2)
    assert load_model("bios-tiny-planted-low_rank", recipe="world", plant=plant) == "model"
    assert calls == [("low_rank", {"recipe": plant, "world_recipe": "world", "rebuild": False, "device": None, "dtype": None})]


def test_a_missed_build_is_recorded_and_reported_without_retraining(tmp_path, monkeypatch):
    import pandas as pd

    import mechunlearn.models.planted as planted
    from mechunlearn.models.bios_tiny import BiosTinyRecipe, GateError

    monkeypatch.setenv("MECHUNLEARN_HOME", str(tmp_path))
    calls = []
    gates = pd.DataFrame({"gate": ["forget_trained"], "exact_match": [0.61], "gate_min": [0.95], "passed": [False]})

    def missing_build(model, world, recipe, **_):
        calls.append(recipe.kind)
        raise GateError("missed", gates)

    monkeypatch.setattr(planted, "build_planted", missing_build)
    small = BiosTinyRecipe().small()
    with pytest.raises(GateError):
        planted.load_planted("heads", world_recipe=small)
    with pytest.raises(GateError, match=r"missed its gates when this recipe was built(.|\n)*0.61") as again:
        planted.load_planted("heads", world_recipe=small)
    assert calls == ["heads"] and again.value.gates["exact_match"].tolist() == [0.61]
    with pytest.raises(GateError):
        planted.load_planted("heads", world_recipe=small, rebuild=True)
    assert calls == ["heads", "heads"]
