"""Weight traces against hand-computed norms and spectra; activation shift on known edits."""

from __future__ import annotations

import math

import pytest
import torch

from mechunlearn.core.edit import DeltaEdit, HookEdit, WeightEdit
from mechunlearn.core.selection import MaskSelection
from mechunlearn.verify.weight_traces import NoWeightChange, activation_shift, as_matrix, delta_traces, parse_weight_name, spectrum_stats, weight_traces
from tests.conftest import make_tiny_model


def value(frame, name, metric, **where):
    sub = frame[(frame["weight_name"] == name) & (frame["metric"] == metric)]
    for k, v in where.items():
        sub = sub[sub[k] == v]
    assert len(sub) == 1, (name, metric, where, len(sub))
    return float(sub["value"].iloc[0])


def test_parse_and_flatten():
    assert parse_weight_name("blocks.3.mlp.W_out") == (3, "mlp", "W_out")
    assert parse_weight_name("embed.W_E") == (None, "embed", "W_E")
    w_q = torch.arange(2 * 3 * 4.0).view(2, 3, 4)  # [h, d_model, d_head]
    m = as_matrix("blocks.0.attn.W_Q", w_q)
    assert m.shape == (3, 8) and torch.equal(m[:, 4:], w_q[1])
    w_o = torch.arange(2 * 4 * 3.0).view(2, 4, 3)  # [h, d_head, d_model]
    assert torch.equal(as_matrix("blocks.0.attn.W_O", w_o)[4:], w_o[1])
    assert as_matrix("blocks.0.ln1.w", torch.ones(3)) is None


def test_spectrum_by_hand():
    u, v = torch.tensor([3.0, 0.0, 4.0]), torch.tensor([1.0, 0.0])
    s, effective, stable = spectrum_stats(torch.outer(u, v))  # rank 1, sigma = |u||v| = 5
    assert s[0] == pytest.approx(5.0) and s[1] == pytest.approx(0.0, abs=1e-6)
    assert effective == pytest.approx(1.0) and stable == pytest.approx(1.0)
    s, effective, stable = spectrum_stats(torch.diag(torch.tensor([2.0, 2.0, 2.0])))
    assert effective == pytest.approx(3.0) and stable == pytest.approx(3.0)
    s, effective, _ = spectrum_stats(torch.diag(torch.tensor([3.0, 1.0])))
    p = torch.tensor([0.75, 0.25])
    assert effective == pytest.approx(math.exp(-(p * p.log()).sum().item()))
    assert spectrum_stats(torch.zeros(3, 3))[1:] == (0.0, 0.0)


def test_delta_traces_by_hand():
    weights = {"blocks.0.mlp.W_out": torch.ones(4, 3), "blocks.0.mlp.b_out": torch.full((3,), 2.0)}
    deltas = {"blocks.0.mlp.W_out": torch.zeros(4, 3), "blocks.0.mlp.b_out": torch.tensor([0.0, 0.0, 3.0])}
    deltas["blocks.0.mlp.W_out"][1, 2] = 6.0
    f = delta_traces(weights, deltas)
    assert value(f, "blocks.0.mlp.W_out", "rel_frobenius") == pytest.approx(6 / math.sqrt(12))
    assert value(f, "blocks.0.mlp.W_out", "delta_density") == pytest.approx(1 / 12)
    assert value(f, "blocks.0.mlp.W_out", "effective_rank") == pytest.approx(1.0)
    assert value(f, "blocks.0.mlp.W_out", "singular_value", rank=0) == pytest.approx(6.0)
    assert value(f, "blocks.0.mlp.b_out", "rel_frobenius") == pytest.approx(3 / math.sqrt(12))
    assert not ((f["weight_name"] == "blocks.0.mlp.b_out") & (f["metric"] == "effective_rank")).any()
    # module aggregate: sqrt(36 + 9) / sqrt(12 + 12)
    assert value(f, "blocks.0.mlp", "rel_frobenius", weight="all") == pytest.approx(math.sqrt(45 / 24))


def test_weight_traces_from_an_edit_equal_before_after(tiny_model):
    name = "blocks.1.mlp.W_in"
    gen = torch.Generator().manual_seed(0)
    delta = torch.randn(tiny_model.weight(name).shape, generator=gen) * 0.1
    keep = torch.zeros_like(delta, dtype=torch.bool)
    keep[:, :16] = True
    edit = DeltaEdit({name: delta}, MaskSelection({name: keep.float()}, {name: keep}), label="toy")
    a = weight_traces(tiny_model, edit).frame
    assert value(a, name, "mask_density") == pytest.approx(0.25)
    assert value(a, name, "delta_density") == pytest.approx(0.25)
    assert value(a, name, "rel_frobenius") == pytest.approx(float((delta * keep).norm() / tiny_model.weight(name).norm()), rel=1e-5)
    other = make_tiny_model()
    with edit.applied(other):
        b = weight_traces(tiny_model, after=other).frame
    assert value(b, name, "rel_frobenius") == pytest.approx(value(a, name, "rel_frobenius"), rel=1e-4)
    assert value(b, "blocks.0.mlp.W_in", "rel_frobenius") == 0.0
    with pytest.raises(ValueError, match="exactly one"):
        weight_traces(tiny_model)


def test_weight_traces_of_any_weight_changing_edit(tiny_model):
    # Needle-style: noise on one value vector, then a delta on another weight
    row = "blocks.0.mlp.W_out[3]"
    noise = WeightEdit(row, "noise", sigma=1.0, seed=2)
    delta = DeltaEdit({"blocks.1.mlp.W_in": torch.full(tiny_model.weight("blocks.1.mlp.W_in").shape, 0.01)})
    before = tiny_model.weights_hash()
    f = weight_traces(tiny_model, noise + delta).frame
    assert tiny_model.weights_hash() == before  # applied and reverted
    assert set(f[f["weight"] != "all"]["weight_name"]) == {"blocks.0.mlp.W_out", "blocks.1.mlp.W_in"}
    w = tiny_model.weight("blocks.0.mlp.W_out")
    assert value(f, "blocks.0.mlp.W_out", "delta_density") == pytest.approx(tiny_model.d_model / w.numel())  # one row of d_mlp
    assert value(f, "blocks.1.mlp.W_in", "delta_density") == 1.0
    with pytest.raises(NoWeightChange, match="changes no weights"):
        weight_traces(tiny_model, HookEdit("blocks.0.hook_resid_post", lambda a, hook: a * 0))


def test_activation_shift_on_known_edits(tiny_model, target):
    zero = DeltaEdit({"blocks.0.mlp.W_out": torch.zeros_like(tiny_model.weight("blocks.0.mlp.W_out"))})
    same = activation_shift(tiny_model, (tiny_model, zero), target, progress=False).frame
    assert same[same["metric"] == "act_cosine"]["value"].tolist() == pytest.approx([1.0] * 4)
    assert same[same["metric"] == "act_rel_shift"]["value"].tolist() == pytest.approx([0.0] * 4, abs=1e-6)
    double = HookEdit("blocks.1.hook_resid_post", lambda act, hook: 2 * act, label="double")
    f = activation_shift(tiny_model, (tiny_model, double), target, position="subject", progress=False).frame
    last = f[f["site"] == "blocks.1.hook_resid_post"].set_index(["split", "metric"])["value"]
    assert last[("forget", "act_norm_ratio")] == pytest.approx(2.0)
    assert last[("retain", "act_cosine")] == pytest.approx(1.0)
    assert last[("forget", "act_rel_shift")] == pytest.approx(1.0)
    first = f[f["site"] == "blocks.0.hook_resid_post"]
    assert first[first["metric"] == "act_norm_ratio"]["value"].tolist() == pytest.approx([1.0, 1.0])
