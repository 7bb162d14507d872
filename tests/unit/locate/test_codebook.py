"""Codebook features (Tamkin et al. 2023) and CodeUnlearn (Wu et al. 2024)."""

from __future__ import annotations

import random

import pytest
import torch

from mechunlearn.core.selection import Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.codebook import (
    Codebook,
    CodebookConfig,
    CodebookEdit,
    CodeFrequency,
    code_frequencies,
    codebook_quality,
    random_codes,
    train_codebook,
)
from mechunlearn.models.activations import capture
from mechunlearn.world.target import Item, Target
from tests.conftest import WORDS

HOOK = "blocks.0.hook_resid_post"


def texts(n, seed=0, length=8):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(n)]


def toy_codebook(k=2) -> Codebook:
    e = torch.eye(4)
    return Codebook(torch.stack([e[0], e[1], e[2], -e[0]]), k, "toy.hook_x", {"config": {"skip_bos": True}})


def test_hand_computed_outputs():
    cb = toy_codebook()
    x = torch.tensor([[1.0, 0.5, 0.0, 0.0]])
    # cos: code0 0.894, code1 0.447, code2 0, code3 -0.894 -> codes 0 and 1
    assert sorted(cb.select(x)[0].tolist()) == [0, 1]
    assert torch.equal(cb(x), torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    off = torch.tensor([True, False, False, False])
    # mask: code 0 can never be chosen, code 2 takes its slot
    assert sorted(cb.select(x, off)[0].tolist()) == [1, 2]
    assert torch.equal(cb(x, off, "mask"), torch.tensor([[0.0, 0.5, 0.5, 0.0]]))
    # zero: code 0 is still chosen but its share of the mean is zeroed (not handed to code 1:
    # renormalising over the remaining codes would give [0, 1, 0, 0])
    assert torch.equal(cb(x, off, "zero"), torch.tensor([[0.0, 0.5, 0.0, 0.0]]))


def test_disabled_codes_are_never_chosen():
    gen = torch.Generator().manual_seed(0)
    cb = Codebook(torch.randn(64, 16, generator=gen), 8, HOOK)
    x = torch.randn(500, 16, generator=gen)
    popular = torch.bincount(cb.select(x).flatten(), minlength=64).topk(10).indices
    off = torch.zeros(64, dtype=torch.bool)
    off[popular] = True
    chosen = cb.select(x, off)
    assert not torch.isin(chosen, popular).any()
    assert all(len(set(row)) == 8 for row in chosen.tolist())  # still k distinct codes per token
    expected = cb.codes[chosen].mean(-2)
    assert torch.equal(cb(x, off), expected)


def test_straight_through_gradient():
    cb = toy_codebook()
    x = torch.tensor([[1.0, 0.5, 0.0, 0.0]], requires_grad=True)
    out = cb(x)
    assert torch.equal(out.detach(), torch.tensor([[0.5, 0.5, 0.0, 0.0]]))  # value: the codes' mean
    (out * torch.tensor([[1.0, 2.0, 3.0, 4.0]])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([[1.0, 2.0, 3.0, 4.0]]))  # d out / d x = identity
    assert torch.equal(cb.codes.grad[0], torch.tensor([0.5, 1.0, 1.5, 2.0]))  # each chosen code gets 1/k


def test_edit_replaces_the_activation_and_reverts_bitwise(tiny_model):
    gen = torch.Generator().manual_seed(1)
    cb = Codebook(torch.randn(32, tiny_model.d_model, generator=gen), 4, HOOK, {"model_id": tiny_model.model_id, "config": {"skip_bos": True}})
    tokens = tiny_model.to_tokens(["the w1 is a w2 of w3", "where was w4 born ?"])
    clean = capture(tiny_model, tokens, [HOOK])[HOOK]
    logits = tiny_model(tokens).detach().clone()
    hooks = tiny_model.hook_count()
    off = [3, 7, 11]
    with CodebookEdit(cb, Selection([Site("codebook", HOOK, (i,)) for i in off])).applied(tiny_model):
        edited = capture(tiny_model, tokens, [HOOK])[HOOK]
    mask = torch.zeros(32, dtype=torch.bool)
    mask[off] = True
    idx = cb.select(clean[:, 1:], mask)
    assert not torch.isin(idx, torch.tensor(off)).any()
    assert torch.equal(edited[:, 1:], cb.codes[idx].mean(-2))
    assert torch.equal(edited[:, 0], clean[:, 0])  # BOS passes through
    assert torch.equal(tiny_model(tokens), logits)
    assert tiny_model.hook_count() == hooks
    with pytest.raises(RuntimeError, match="boom"):
        with CodebookEdit(cb).applied(tiny_model):
            raise RuntimeError("boom")
    assert torch.equal(tiny_model(tokens), logits)


def embedding_codebook(model, k=1) -> Codebook:
    """One code per vocabulary token at ``hook_embed``: every token chooses its own embedding."""
    return Codebook(model.weight("embed.W_E").detach(), k, "hook_embed", {"model_id": model.model_id, "config": {"skip_bos": True}})


def test_codeunlearn_scores_pick_the_planted_code(tiny_model):
    cb = embedding_codebook(tiny_model)
    w7, w8 = tiny_model.encode("w7")[0], tiny_model.encode("w8")[0]
    fills = ("a", "w2", "w3", "of")
    target = Target("planted", tuple(Item(f"the w7 is {w}", "x") for w in fills), tuple(Item(f"the w8 is {w}", "x") for w in fills))
    tiny_model.attach("codebook", "hook_embed", cb)
    sel = CodeFrequency(hook="hook_embed").locate(tiny_model, target, progress=False)
    assert sel[0].site == Site("codebook", "hook_embed", (w7,))
    assert sel[0].freq_forget == pytest.approx(0.25) and sel[0].freq_retain == 0.0  # 4 of 16 non-BOS tokens
    assert sel[len(sel) - 1].site.index == (w8,) and sel[len(sel) - 1].score == pytest.approx(-0.25)
    ratio = CodeFrequency(hook="hook_embed", score="ratio", eps=1e-3).locate(tiny_model, target, progress=False)
    assert ratio[0].site.index == (w7,) and ratio[0].score == pytest.approx((0.25 + 1e-3) / 1e-3)
    # disabling it changes the activation at the w7 token only
    tokens = tiny_model.to_tokens(["the w7 is a"])
    inserted = CodebookEdit(cb)
    with inserted.applied(tiny_model):
        plain = capture(tiny_model, tokens, ["hook_embed"])["hook_embed"]
    with CodebookEdit(cb, sel.top(1)).applied(tiny_model):
        unlearned = capture(tiny_model, tokens, ["hook_embed"])["hook_embed"]
    assert (plain != unlearned).any(-1)[0].tolist() == [False, False, True, False, False]


def test_code_frequencies_count_tokens(tiny_model):
    cb = embedding_codebook(tiny_model)
    freq = code_frequencies(tiny_model, cb, ["w7 w7 a", "a the"], progress=False)
    w7, a = tiny_model.encode("w7")[0], tiny_model.encode("a")[0]
    assert freq.loc[w7, "count"] == 2 and freq.loc[a, "count"] == 2
    assert freq["count"].sum() == 5 and freq.loc[w7, "freq"] == pytest.approx(2 / 5)


def test_train_quality_save_load(tiny_model, tmp_path):
    cfg = CodebookConfig(hook=HOOK, n_codes=64, k=4, steps=40, batch_size=128, lr=5e-3, revive_every=20)
    cb = train_codebook(tiny_model, texts(80), cfg, out_dir=tmp_path / "cb", progress=False)
    log = cb.meta["train_log"]
    assert log[-1]["recon"] < log[0]["recon"]
    held_out = texts(30, seed=4)
    q = codebook_quality(tiny_model, cb, held_out, progress=False).frame.set_index("metric")["value"]
    # the same shape with random unit codes: what training must beat on unseen texts
    rand = torch.nn.functional.normalize(torch.randn(cb.codes.shape, generator=torch.Generator().manual_seed(0)), dim=-1)
    r = codebook_quality(tiny_model, Codebook(rand, cb.k, HOOK, cb.meta), held_out, progress=False).frame.set_index("metric")["value"]
    assert q["explained_variance"] > max(0.5, r["explained_variance"] + 0.3)
    # (the LM loss of a random tiny model says nothing either way, so it is not compared)
    assert 0 < q["code_usage"] <= 1
    loaded = Codebook.load(tmp_path / "cb", tiny_model)
    assert torch.equal(loaded.codes, cb.codes) and loaded.k == 4 and loaded.hook == HOOK
    assert not loaded.codes.requires_grad


def test_joint_training_leaves_the_model_unchanged(tiny_model):
    before = tiny_model.weights_hash()
    cfg = CodebookConfig(hook=HOOK, n_codes=32, k=4, steps=6, batch_size=64, objective="joint", revive_every=0)
    cb = train_codebook(tiny_model, texts(40), cfg, progress=False)
    assert all(torch.isfinite(torch.tensor([r["lm"], r["recon"]])).all() for r in cb.meta["train_log"])
    assert tiny_model.weights_hash() == before
    assert tiny_model.hook_count() == 0


def test_random_codes_and_errors(tiny_model):
    cb = Codebook(torch.randn(20, tiny_model.d_model), 4, HOOK)
    picks = random_codes(cb, 5, seed=3)
    assert len(set(picks)) == 5 and picks == random_codes(cb, 5, seed=3)
    assert set(random_codes(cb, 3, among=[1, 2, 3, 4])) <= {1, 2, 3, 4}
    with pytest.raises(ValueError, match="cannot draw"):
        random_codes(cb, 6, among=[1, 2])
    with pytest.raises(ValueError, match="fewer than k"):
        CodebookEdit(cb, list(range(17)))
    with pytest.raises(IndexError, match="out of range"):
        CodebookEdit(cb, [20])
    with pytest.raises(ValueError, match="not a codebook code site"):
        CodebookEdit(cb, Selection([Site("sae", HOOK, (1,))]))
    with pytest.raises(ValueError, match="cannot exceed n_codes"):
        CodebookConfig(n_codes=4, k=8)
    with pytest.raises(ValueError, match="objective"):
        CodebookConfig(objective="vq")
    with pytest.raises(ValueError, match="no codebook is attached"):
        CodeFrequency(hook=HOOK).locate(tiny_model, Target("t", (Item("the", "a"),), (Item("a", "the"),)))


def test_one_call_codeunlearn_and_its_random_comparator(tiny_model, tmp_path, monkeypatch):
    from mechunlearn.locate.codebook import codeunlearn

    monkeypatch.setenv("MECHUNLEARN_HOME", str(tmp_path))
    cfg = CodebookConfig(hook=HOOK, n_codes=32, k=4, steps=10, batch_size=64)
    target = Target("t", tuple(Item(f"the w7 is {w}", "a") for w in ("w1", "w2")), tuple(Item(f"the w8 is {w}", "a") for w in ("w1", "w2")))
    edit, sel = codeunlearn(tiny_model, target, config=cfg, n_codes=5, texts=texts(40), progress=False)
    assert edit.disabled == tuple(s.index[0] for s in sel.top(5).sites) and edit.mode == "zero"
    rand, _ = codeunlearn(tiny_model, target, config=cfg, n_codes=5, random=True, seed=1, progress=False)
    frame = sel.to_frame()
    live = set(frame.loc[(frame["freq_forget"] + frame["freq_retain"]) > 0, "latent"])
    assert len(rand.disabled) == 5 and set(rand.disabled) <= live
