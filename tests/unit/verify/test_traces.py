"""Concept-vector traces: tensor metrics by hand, and before/after tables for edits on a tiny model."""

import pytest
import torch

from mechunlearn.core import WeightEdit
from mechunlearn.verify.traces import compare, cosine, l2, snapshot, topk_jaccard, vector_traces

SITE = "blocks.1.mlp.W_out[3]"


def test_cosine_and_l2_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [3.0, 4.0]])
    b = torch.tensor([[0.0, 2.0], [-2.0, -2.0], [3.0, 4.0]])
    assert cosine(a, b).tolist() == pytest.approx([0.0, -1.0, 1.0], abs=1e-6)
    assert l2(torch.zeros(2), torch.tensor([3.0, 4.0])).item() == pytest.approx(5.0)
    assert cosine(torch.zeros(3), torch.ones(3)).item() == 0.0
    with pytest.raises(ValueError, match="same shape"):
        cosine(torch.zeros(3), torch.zeros(4))


def test_topk_jaccard_by_hand():
    a = torch.tensor([[1, 2, 3], [1, 2, 3], [1, 2, 3]])
    b = torch.tensor([[2, 3, 4], [3, 2, 1], [7, 8, 9]])
    assert topk_jaccard(a, b).tolist() == pytest.approx([0.5, 1.0, 0.0])
    with pytest.raises(ValueError, match="batch shape"):
        topk_jaccard(a, b[:2])


def frame_of(result):
    return result.frame.pivot_table(index="site", columns="metric", values="value").loc[SITE]


def test_scaling_keeps_direction_and_top_tokens(tiny_model):
    before_hash = tiny_model.weights_hash()
    row = frame_of(vector_traces(tiny_model, [SITE], WeightEdit(SITE, "scale", value=2.0), k=8))
    assert row["cosine"] == pytest.approx(1.0, abs=1e-6)
    assert row["rel_l2"] == pytest.approx(1.0, abs=1e-6)
    assert row["l2"] == pytest.approx(tiny_model.weight(SITE).norm().item(), rel=1e-5)
    assert row["jaccard"] == 1.0
    assert tiny_model.weights_hash() == before_hash  # applied and reverted


def test_negation_flips_everything(tiny_model):
    row = frame_of(vector_traces(tiny_model, [SITE], WeightEdit(SITE, "scale", value=-1.0), k=8))
    assert row["cosine"] == pytest.approx(-1.0, abs=1e-6)
    assert row["rel_l2"] == pytest.approx(2.0, abs=1e-6)
    assert row["jaccard"] == 0.0  # top-8 of -v is the bottom-8 of v (65-token vocabulary)


def test_after_set_uses_the_edited_unembedding(tiny_model):
    # the vector itself does not change, but its tokens do when W_U is negated
    row = frame_of(vector_traces(tiny_model, [SITE], WeightEdit("unembed.W_U", "scale", value=-1.0), k=8))
    assert row["cosine"] == pytest.approx(1.0) and row["l2"] == 0.0
    assert row["jaccard"] == 0.0


def test_active_handle_needs_a_before_snapshot(tiny_model):
    sites = [SITE, "blocks.0.mlp.W_out[0]"]
    edit = WeightEdit(SITE, "noise", sigma=1.0, relative=True, seed=3)
    via_edit = vector_traces(tiny_model, sites, edit, k=8).frame
    before = snapshot(tiny_model, sites, k=8)
    handle = edit.apply(tiny_model)
    try:
        with pytest.raises(ValueError, match="before=snapshot"):
            vector_traces(tiny_model, sites, handle, k=8)
        via_handle = vector_traces(tiny_model, sites, handle, before=before, k=8).frame
    finally:
        handle.revert()
    assert via_handle["value"].tolist() == pytest.approx(via_edit["value"].tolist())
    untouched = via_edit[via_edit["site"] == "blocks.0.mlp.W_out[0]"].set_index("metric")["value"]
    assert untouched["cosine"] == pytest.approx(1.0) and untouched["l2"] == 0.0 and untouched["jaccard"] == 1.0
    moved = via_edit[via_edit["site"] == SITE].set_index("metric")["value"]
    assert moved["cosine"] < 0.9 and moved["l2"] > 0
    # a reverted handle is re-applied like its edit
    again = vector_traces(tiny_model, sites, handle, k=8).frame
    assert again["value"].tolist() == pytest.approx(via_edit["value"].tolist())


def test_result_is_tidy(tiny_model):
    result = vector_traces(tiny_model, [SITE], WeightEdit(SITE, "zero"), k=8, method="zero")
    assert set(result.frame["metric"]) == {"cosine", "l2", "rel_l2", "jaccard"}
    assert (result.frame["method"] == "zero").all() and (result.frame["layer"] == 1).all()


def test_snapshots_must_match_and_sites_must_be_vectors(tiny_model):
    a = snapshot(tiny_model, [SITE], k=8)
    with pytest.raises(ValueError, match="different sites"):
        compare(a, snapshot(tiny_model, ["blocks.0.mlp.W_out[1]"], k=8))
    with pytest.raises(ValueError, match="different k"):
        compare(a, snapshot(tiny_model, [SITE], k=4))
    with pytest.raises(ValueError, match="not a d_model-wide vector"):
        snapshot(tiny_model, ["blocks.0.mlp.W_out"])
    with pytest.raises(ValueError, match="no sites"):
        snapshot(tiny_model, [])
    with pytest.raises(ValueError, match="nothing to compare"):
        vector_traces(tiny_model, [SITE])


def _erase_bottom_tokens(model, site, k):
    """A W_U edit that zeroes the logits of the vector's k lowest tokens: its top tokens stay,
    its bottom tokens change."""
    w_u = model.weight("unembed.W_U").detach().clone()
    bottom = (model.weight(site).detach() @ w_u).topk(k, largest=False).indices
    w_u[:, bottom] = 0.0
    return WeightEdit("unembed.W_U", "set", value=w_u)


def test_a_negative_concept_is_traced_through_its_own_tokens(tiny_model):
    from mechunlearn.world.concepts import ConceptLocation

    edit = _erase_bottom_tokens(tiny_model, SITE, 8)
    negative = ConceptLocation(layer=1, index=3, sign=-1)
    assert str(negative.site) == SITE
    v = tiny_model.weight(SITE).detach()
    # the snapshot of a sign -1 location holds the top tokens of -v (= v's bottom tokens)
    snap = snapshot(tiny_model, [negative], k=8)
    assert snap.signs == (-1,)
    assert set(snap.top_ids[0].tolist()) == set((v @ tiny_model.weight("unembed.W_U")).topk(8, largest=False).indices.tolist())
    plain = frame_of(vector_traces(tiny_model, [SITE], edit, k=8))
    signed = frame_of(vector_traces(tiny_model, [negative], edit, k=8))
    by_signs = frame_of(vector_traces(tiny_model, [SITE], edit, k=8, signs=[-1]))
    assert plain["jaccard"] == 1.0  # the +v tokens were not touched ...
    assert signed["jaccard"] < 0.5  # ... but the concept's (-v's) were
    assert by_signs["jaccard"] == signed["jaccard"]
    assert signed["cosine"] == plain["cosine"] == pytest.approx(1.0)  # sign-free metrics are unchanged
    table = vector_traces(tiny_model, [negative], edit, k=8).frame
    assert set(table["sign"]) == {-1}


def test_signs_are_checked(tiny_model):
    from mechunlearn.world.concepts import ConceptLocation

    with pytest.raises(ValueError, match="one \\+1 or -1 per site"):
        snapshot(tiny_model, [SITE], k=8, signs=[1, -1])
    with pytest.raises(ValueError, match="must be \\+1 or -1"):
        snapshot(tiny_model, [SITE], k=8, signs=[2])
    with pytest.raises(ValueError, match="contradicts"):
        snapshot(tiny_model, [ConceptLocation(layer=1, index=3, sign=-1)], k=8, signs=[1])
    before = snapshot(tiny_model, [SITE], k=8)
    with pytest.raises(ValueError, match="signs"):
        compare(before, snapshot(tiny_model, [SITE], k=8, signs=[-1]))
