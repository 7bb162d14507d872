import pytest
import torch

from mechunlearn.core.edit import Compose, DeltaEdit, HookEdit, WeightEdit
from mechunlearn.core.selection import MaskSelection

TOKENS = torch.tensor([[1, 5, 6, 7, 8, 9]])


def logits(m):
    with torch.no_grad():
        return m(TOKENS)


@pytest.mark.parametrize(
    "edit",
    [
        WeightEdit("blocks.0.mlp.W_out[3]", "zero"),
        WeightEdit("blocks.1.mlp.W_out[3]", "noise", sigma=0.5, seed=1),
        WeightEdit("blocks.1.mlp.W_in", "scale", value=0.5),
        WeightEdit("blocks.0.attn.W_Q[1]", "add", value=0.3),
        WeightEdit("embed.W_E[7]", "set", value=torch.ones(32)),
    ],
)
def test_weight_edit_changes_then_reverts_bitwise(tiny_model, edit):
    m = tiny_model
    before, ref = m.weights_hash(), logits(m)
    with edit.applied(m) as handle:
        assert m.weights_hash() != before
        assert not torch.equal(logits(m), ref)
        assert handle.active
    assert m.weights_hash() == before
    assert torch.equal(logits(m), ref)
    assert not handle.active


def test_revert_is_exact_when_body_raises(tiny_model):
    m = tiny_model
    before = m.weights_hash()
    hooks = m.hook_count()
    edit = WeightEdit("blocks.0.mlp.W_out[2]", "noise", sigma=1.0) + HookEdit("blocks.0.hook_resid_post", lambda a, hook: a * 0)
    with pytest.raises(KeyError):
        with edit.applied(m):
            raise KeyError("boom")
    assert m.weights_hash() == before
    assert m.hook_count() == hooks


def test_snapshot_is_the_slice_not_the_model(tiny_model):
    handle = WeightEdit("blocks.1.mlp.W_out[4]", "zero").apply(tiny_model)
    assert handle.snapshot_numel == tiny_model.d_model
    handle.revert()


def test_edits_compose_and_revert_lifo(tiny_model):
    m = tiny_model
    before = m.weights_hash()
    a = WeightEdit("blocks.0.mlp.W_out[1]", "add", value=1.0)
    b = WeightEdit("blocks.0.mlp.W_out[1]", "scale", value=3.0)
    ha = a.apply(m)
    hb = b.apply(m)
    with pytest.raises(RuntimeError, match="last-in first-out"):
        ha.revert()
    hb.revert()
    ha.revert()
    assert m.weights_hash() == before
    row = m.weight("blocks.0.mlp.W_out[1]").detach().clone()
    with Compose([a, b]).applied(m):  # in order: (row + 1) * 3
        assert torch.equal(m.weight("blocks.0.mlp.W_out[1]"), (row + 1.0) * 3.0)
    with Compose([b, a]).applied(m):  # the other order: row * 3 + 1
        assert torch.equal(m.weight("blocks.0.mlp.W_out[1]"), row * 3.0 + 1.0)
    assert m.weights_hash() == before


def test_a_compose_that_fails_part_way_reverts_the_parts_it_applied(tiny_model):
    m = tiny_model
    before, hooks = m.weights_hash(), m.hook_count()
    applied = WeightEdit("blocks.0.mlp.W_out[1]", "noise", sigma=1.0) + HookEdit("blocks.0.hook_resid_post", lambda a, hook: a * 0)
    broken = WeightEdit("blocks.1.mlp.W_out[999]", "zero")  # d_mlp is 64
    with pytest.raises(IndexError, match="out of range"):
        Compose([applied, broken]).apply(m)
    assert m.weights_hash() == before and m.hook_count() == hooks


def test_a_delta_edit_that_fails_part_way_restores_the_weights_it_changed(tiny_model):
    m = tiny_model
    before = m.weights_hash()
    good = {n: torch.ones_like(m.weight(n)) for n in ("blocks.0.mlp.W_in", "blocks.0.mlp.W_out")}
    with pytest.raises(ValueError, match="blocks.1.mlp.W_in"):
        DeltaEdit({**good, "blocks.1.mlp.W_in": torch.zeros(3)}).apply(m)  # the third delta has the wrong shape
    assert m.weights_hash() == before
    name = "blocks.1.mlp.W_out"
    mask = MaskSelection({n: torch.rand_like(m.weight(n)) for n in (*good, name)}).frac(0.5)
    values = {n: torch.ones(int(mask.masks[n].sum())) for n in good}
    with pytest.raises(ValueError, match="masked entries"):
        DeltaEdit({**values, name: torch.ones(5)}, mask).apply(m)
    assert m.weights_hash() == before


def test_unit_indices_out_of_range_are_clear_errors(tiny_model):
    with pytest.raises(IndexError, match="unit 64 out of range .*64 units"):
        HookEdit("blocks.1.mlp.hook_post[64]", lambda a, hook: a).apply(tiny_model)
    with pytest.raises(IndexError, match="unit 32 out of range"):
        HookEdit("blocks.0.hook_resid_post[32]", lambda a, hook: a).apply(tiny_model)
    # a hook whose width the config does not fix is checked in the forward, by name
    with HookEdit("blocks.0.attn.hook_z[9]", lambda a, hook: a).applied(tiny_model):
        with pytest.raises(IndexError, match=r"blocks.0.attn.hook_z\[9\]: unit 9 out of range"):
            logits(tiny_model)


def test_masked_delta_touches_only_the_mask(tiny_model):
    m = tiny_model
    name = "blocks.1.mlp.W_in"
    before = m.weight(name).clone()
    keep = torch.zeros_like(before, dtype=torch.bool)
    keep[0, :5] = True
    mask = MaskSelection({name: torch.rand_like(before)}, {name: keep})
    edit = DeltaEdit({name: torch.ones_like(before)}, mask)
    with edit.applied(m) as handle:
        after = m.weight(name)
        assert torch.equal(after[~keep], before[~keep])
        assert torch.equal(after[keep], before[keep] + 1)
        assert handle.snapshot_numel == 5
    assert torch.equal(m.weight(name), before)


def test_hook_edit_removes_only_its_own_hook(tiny_model):
    m = tiny_model
    calls = []
    point = m.hook_point("blocks.0.hook_resid_post")
    point.add_hook(lambda act, hook: calls.append(1), dir="fwd")  # the user's own hook
    base = m.hook_count()
    ref = logits(m)
    edit = HookEdit("blocks.0.hook_resid_post", lambda act, hook: act * 0.0)
    with edit.applied(m):
        assert m.hook_count() == base + 1
        assert not torch.equal(logits(m), ref)
    assert m.hook_count() == base
    assert torch.equal(logits(m), ref)
    n = len(calls)
    logits(m)
    assert len(calls) == n + 1  # the user's hook survived
    point.remove_hooks()


def test_hook_edit_on_one_unit(tiny_model):
    m = tiny_model
    seen = {}

    def capture(act, hook):
        seen["post"] = act.clone()

    def zero(unit_act, hook):
        return torch.zeros_like(unit_act)

    with HookEdit("blocks.1.mlp.hook_post[3]", zero).applied(m), HookEdit("blocks.1.mlp.hook_post", capture).applied(m):
        logits(m)
    assert torch.count_nonzero(seen["post"][..., 3]) == 0
    assert torch.count_nonzero(seen["post"][..., 4]) > 0


def test_bad_edits_say_what_to_fix(tiny_model):
    with pytest.raises(ValueError, match="use HookEdit"):
        WeightEdit("blocks.0.hook_resid_post", "zero").apply(tiny_model)
    with pytest.raises(ValueError, match="needs a value"):
        WeightEdit("blocks.0.mlp.W_out", "add")
    with pytest.raises(ValueError, match="shape"):
        DeltaEdit({"blocks.0.mlp.W_out": torch.zeros(3)}).apply(tiny_model)
