import numpy as np
import pandas as pd
import pytest
import torch

from mechunlearn.core.selection import MaskSelection, Selection
from mechunlearn.core.site import Site
from mechunlearn.verify.localization import (
    GRANULARITIES,
    GroundTruth,
    auroc,
    oracle_scores,
    random_scores,
    score_localizer,
    score_table,
    top_entries,
)

N_LAYERS, D_MODEL, D_MLP, N_HEADS, D_HEAD = 2, 16, 64, 4, 4


def _shapes():
    out = {}
    for l in range(N_LAYERS):
        out |= {f"blocks.{l}.attn.W_Q": (N_HEADS, D_MODEL, D_HEAD), f"blocks.{l}.attn.b_Q": (N_HEADS, D_HEAD),
                f"blocks.{l}.attn.W_O": (N_HEADS, D_HEAD, D_MODEL), f"blocks.{l}.attn.b_O": (D_MODEL,),
                f"blocks.{l}.mlp.W_in": (D_MODEL, D_MLP), f"blocks.{l}.mlp.b_in": (D_MLP,),
                f"blocks.{l}.mlp.W_out": (D_MLP, D_MODEL), f"blocks.{l}.mlp.b_out": (D_MODEL,)}
    return out


def _truth(neurons=(3, 9, 17, 40, 41, 50, 60, 63)):
    """S: eight MLP neurons of layer 0 (their W_in columns, b_in entries, W_out rows)."""
    shapes = _shapes()
    hidden = torch.zeros(D_MLP, dtype=torch.bool)
    hidden[list(neurons)] = True
    masks = {n: torch.zeros(s, dtype=torch.bool) for n, s in shapes.items()}
    masks["blocks.0.mlp.W_in"] = hidden.expand(D_MODEL, D_MLP).clone()
    masks["blocks.0.mlp.b_in"] = hidden.clone()
    masks["blocks.0.mlp.W_out"] = hidden[:, None].expand(D_MLP, D_MODEL).clone()
    return GroundTruth(tuple(shapes), tuple(shapes.values()), masks, N_LAYERS, D_MLP, N_HEADS)


@pytest.mark.parametrize("granularity", ["entries", "neurons", "tensors"])
def test_oracle_reads_one_and_random_reads_half(granularity):
    S = _truth()
    row = score_localizer(oracle_scores(S, granularity), S, granularity)
    assert row["auroc"] == 1.0 and row["precision_at_s"] == 1.0 and row["recall_at_s"] == 1.0
    mean = np.mean([score_localizer(random_scores(S, granularity, seed=s), S, granularity)["auroc"] for s in range(20)])
    assert abs(mean - 0.5) < 0.05


def test_auroc_ties_and_inverted():
    assert auroc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert auroc(np.array([0.0, 1.0, 2.0]), np.array([True, False, False])) == 0.0
    with pytest.raises(ValueError):
        auroc(np.array([1.0]), np.array([True]))


def test_truth_at_each_granularity_counts_the_planted_units():
    S = _truth()
    assert S.labels("neurons").sum() == 8 and S.labels("neurons").size == N_LAYERS * D_MLP
    assert S.labels("heads").sum() == 0
    assert S.labels("tensors").sum() == 3  # W_in, b_in, W_out of layer 0
    assert list(S.labels("modules")) == [False, True, False, False]  # (0, attn), (0, mlp), (1, attn), (1, mlp)
    assert list(S.labels("layers")) == [True, False]
    assert len(S) == 8 * (2 * D_MODEL + 1)


def test_weight_scores_coarsen_to_neurons_and_modules():
    S = _truth()
    # A localizer that scores only layer 0's W_out, high on the planted rows.
    w_out = torch.zeros(D_MLP, D_MODEL)
    w_out[[3, 9, 17, 40, 41, 50, 60, 63]] = 1.0
    sel = MaskSelection({"blocks.0.mlp.W_out": w_out})
    assert score_localizer(sel, S, "neurons")["auroc"] == 1.0
    # Entries it did not look at (W_in, b_in of S) rank below everything it scored.
    row = score_localizer(sel, S, "entries")
    assert row["n_scored"] == D_MLP * D_MODEL and row["recall_at_s"] < 1.0
    assert score_localizer(sel, S, "modules")["auroc"] == 1.0


def test_sites_map_onto_units_and_coarser_sites_refuse_finer_granularity():
    S = _truth()
    sites = Selection([Site.parse("blocks.0.mlp.W_out[3]"), Site.parse("blocks.1.mlp.W_out[5]")], np.array([2.0, 1.0]))
    row = score_localizer(sites, S, "neurons")
    assert row["n_scored"] == 2 and row["precision_at_s"] == 1 / 8
    layer_sites = Selection([Site.parse("blocks.1.hook_resid_post"), Site.parse("blocks.0.hook_resid_post")], np.array([2.0, 1.0]))
    assert score_localizer(layer_sites, S, "layers")["auroc"] == 0.0
    with pytest.raises(ValueError, match="coarser"):
        score_localizer(Selection([Site.parse("blocks.0.mlp.W_out")], np.array([1.0])), S, "neurons")


def test_per_layer_series_and_degenerate_granularity():
    S = _truth()
    assert score_localizer(pd.Series([0.9, 0.1], index=[0, 1]), S, "layers")["auroc"] == 1.0
    everywhere = GroundTruth(S.names, S.shapes, {n: torch.ones(s, dtype=torch.bool) for n, s in zip(S.names, S.shapes)}, N_LAYERS, D_MLP, N_HEADS)
    row = score_localizer(random_scores(everywhere, "layers"), everywhere, "layers")
    assert np.isnan(row["auroc"]) and "every unit" in row["note"]


def test_score_table_adds_coarser_granularities_and_references():
    S = _truth()
    table = score_table({"oracle-like": ("entries", MaskSelection({n: m.float() for n, m in S.masks.items()}))}, S)
    mine = table[table["localizer"] == "oracle-like"]
    assert list(mine["granularity"]) == list(GRANULARITIES)
    assert (mine.dropna(subset=["auroc"])["auroc"] == 1.0).all()
    assert set(table["localizer"]) == {"oracle-like", "random", "oracle"}


@pytest.mark.parametrize("granularity", ["entries", "neurons", "tensors", "layers"])
def test_top_entries_has_exactly_s_entries_and_oracle_top_is_s(granularity):
    S = _truth()
    mask = top_entries(oracle_scores(S, granularity), S, granularity)
    assert len(mask) == len(S)
    if granularity in ("entries", "neurons"):
        assert all(torch.equal(mask.masks[n], S.masks[n]) for n in S.names)
    # A random pick of the same size overlaps S by about |S|/total.
    rand = top_entries(random_scores(S, "entries", seed=1), S, "entries")
    overlap = sum(int((rand.masks[n] & S.masks[n]).sum()) for n in S.names)
    total = sum(m.numel() for m in S.masks.values())
    assert overlap < 3 * len(S) * len(S) / total + 10


def test_heatmap_shows_each_localizer_at_its_own_granularity():
    from mechunlearn.figures.localization import auroc_heatmap, restricted_bars

    S = _truth()
    w = MaskSelection({n: m.float() for n, m in S.masks.items()})
    table = pd.concat([score_table({"sal": ("entries", w), "lay": ("layers", pd.Series([0.2, 0.9], index=[0, 1]))}, S).assign(plant=p)
                       for p in ("layer", "neurons")])
    fig = auroc_heatmap(table)
    z = dict(zip(fig.data[0].y, fig.data[0].z))
    assert list(fig.data[0].y) == ["sal", "lay"]  # the references are left out when there are localizers
    assert list(z["sal"]) == [1.0, 1.0] and list(z["lay"]) == [0.0, 0.0]  # entries for sal, layers for lay
    with pytest.raises(ValueError, match="plant"):
        auroc_heatmap(table.drop(columns="plant"))
    with pytest.raises(ValueError, match="loss"):
        restricted_bars(pd.DataFrame({"x": [1]}))


def test_the_random_reference_is_near_half_even_with_one_planted_unit_of_four():
    S = _truth()
    table = score_table({"x": ("layers", pd.Series([0.9, 0.1], index=[0, 1]))}, S).set_index("localizer")
    assert abs(table.loc["random", "auroc"] - 0.5) < 0.05 and table.loc["random", "auroc_sd"] > 0.3
