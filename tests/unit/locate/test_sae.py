"""SAE features (Farrell, Lau & Conmy 2024) with SAELens: training, quality, selection, clamping."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import torch

from mechunlearn.core.selection import Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.sae import (
    FeatureClamp,
    SAEFeatureFrequency,
    SAETrainConfig,
    SparseAutoencoder,
    clamp_delta,
    clamp_sweep,
    decoder_overlap,
    feature_frequencies,
    neuron_overlap,
    pooled_frequencies,
    sae_quality,
    train_sae,
)
from mechunlearn.models.activations import capture
from mechunlearn.world.target import Item, Target
from tests.conftest import WORDS

HOOK = "blocks.0.hook_resid_post"


def hand_sae(model, hook, W_enc, b_enc, W_dec, b_dec=None) -> SparseAutoencoder:
    """A SAELens ReLU SAE with the given weights, wrapped for ``model``."""
    from sae_lens import StandardSAE, StandardSAEConfig

    d_in, d_sae = W_enc.shape
    sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae))
    with torch.no_grad():
        sae.W_enc.copy_(W_enc)
        sae.b_enc.copy_(b_enc)
        sae.W_dec.copy_(W_dec)
        sae.b_dec.copy_(torch.zeros(d_in) if b_dec is None else b_dec)
    return SparseAutoencoder(sae, hook, {"model_id": model.model_id, "config": {"skip_bos": True}})


def random_sae(model, hook=HOOK, d_sae=16, seed=0) -> SparseAutoencoder:
    gen = torch.Generator().manual_seed(seed)
    d = model.d_model
    return hand_sae(model, hook, torch.randn(d, d_sae, generator=gen), torch.randn(d_sae, generator=gen) * 0.5, torch.randn(d_sae, d, generator=gen) * 0.3)


def texts(n, seed=0, length=8):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(length)) for _ in range(n)]


def relu_encode(sae, x):
    return torch.relu((x.double() - sae.b_dec.double()) @ sae.sae.W_enc.double() + sae.sae.b_enc.double())


# --------------------------------------------------------------------------- the clamp edit


def test_clamp_changes_activation_by_exactly_the_decoder_delta(tiny_model):
    sae = random_sae(tiny_model)
    latents, c = [3, 5, 9], 7.0
    tokens = tiny_model.to_tokens(["the w1 is a w2 of w3", "where was w4 born ?"])
    clean = capture(tiny_model, tokens, [HOOK])[HOOK]
    with FeatureClamp(sae, latents, value=c).applied(tiny_model):
        edited = capture(tiny_model, tokens, [HOOK])[HOOK]

    f = relu_encode(sae, clean)[..., latents]
    assert (f > 0).any() and (f == 0).any(), "the test needs both active and inactive selected latents"
    f_new = torch.where(f > 0, torch.full_like(f, -c), f)
    delta = torch.einsum("bpk,kd->bpd", f_new - f, sae.W_dec[latents].double())
    delta[:, 0] = 0  # BOS untouched
    torch.testing.assert_close(edited.double(), clean.double() + delta, atol=1e-5, rtol=0)
    assert torch.equal(edited[:, 0], clean[:, 0])
    # the library's own delta function agrees, and it sets active latents to exactly -c
    d2, f2, fn2 = clamp_delta(sae, clean, latents, c)
    assert torch.equal(fn2[f2 > 0], torch.full_like(fn2[f2 > 0], -c))
    assert torch.equal(fn2[f2 <= 0], f2[f2 <= 0])
    torch.testing.assert_close(d2[:, 1:].double(), delta[:, 1:], atol=1e-5, rtol=0)


def test_zero_mode_removes_the_active_latents_contribution(tiny_model):
    sae = random_sae(tiny_model, seed=1)
    latents = [0, 1, 2, 3]
    tokens = tiny_model.to_tokens(["the w1 is a w2"])
    clean = capture(tiny_model, tokens, [HOOK])[HOOK]
    with FeatureClamp(sae, latents, mode="zero").applied(tiny_model):
        edited = capture(tiny_model, tokens, [HOOK])[HOOK]
    f = relu_encode(sae, clean)[..., latents]
    expected = clean.double() - torch.einsum("bpk,kd->bpd", f, sae.W_dec[latents].double())
    expected[:, 0] = clean[:, 0].double()
    torch.testing.assert_close(edited.double(), expected, atol=1e-5, rtol=0)


def test_clamp_reverts_bitwise_even_after_an_error(tiny_model):
    sae = random_sae(tiny_model)
    tokens = tiny_model.to_tokens(["the w1 is a w2 of w3"])
    before = tiny_model(tokens).detach().clone()
    hooks = tiny_model.hook_count()
    edit = FeatureClamp(sae, Selection([Site("sae", HOOK, (i,)) for i in (2, 4)]), value=50.0)
    with edit.applied(tiny_model) as handle:
        assert handle.edit is edit
        assert not torch.equal(tiny_model(tokens), before)
    assert torch.equal(tiny_model(tokens), before)
    with pytest.raises(RuntimeError, match="boom"):
        with edit.applied(tiny_model):
            raise RuntimeError("boom")
    assert torch.equal(tiny_model(tokens), before)
    assert tiny_model.hook_count() == hooks


def test_clamp_rejects_bad_input(tiny_model):
    sae = random_sae(tiny_model)
    with pytest.raises(IndexError, match="out of range"):
        FeatureClamp(sae, [99])
    with pytest.raises(ValueError, match="c must be >= 0"):
        FeatureClamp(sae, [1], value=-1.0)
    with pytest.raises(ValueError, match="no latents"):
        FeatureClamp(sae, [])
    with pytest.raises(ValueError, match="belongs to an SAE at"):
        FeatureClamp(sae, Selection([Site("sae", "blocks.1.hook_resid_post", (1,))]))
    other = hand_sae(tiny_model, HOOK, sae.sae.W_enc, sae.sae.b_enc, sae.W_dec)
    other.meta["model_id"] = "another-model"
    with pytest.raises(ValueError, match="trained on 'another-model'"):
        FeatureClamp(other, [1]).apply(tiny_model)


# --------------------------------------------------------------------------- feature selection


def planted_sae(model, token: str, planted: int = 5, d_sae: int = 8, decoy: tuple[str, int] = ("w8", 2), more: tuple[tuple[str, int], ...] = ()) -> SparseAutoencoder:
    """An SAE at ``hook_embed`` whose latent ``planted`` fires on ``token`` and on nothing else,
    latent ``decoy[1]`` likewise on ``decoy[0]``; the others are random directions with a large
    bias (they fire on every token, forget and retain alike); ``more`` plants further (word, latent)."""
    W_E = model.weight("embed.W_E").detach()
    gen = torch.Generator().manual_seed(0)
    W_enc = torch.randn(model.d_model, d_sae, generator=gen)
    b_enc = (W_E @ W_enc).abs().max(0).values + 1.0
    for word, latent in ((token, planted), decoy, *more):
        tid = model.encode(word)[0]
        e = W_E[tid] / W_E[tid].norm()
        proj = W_E @ e
        others = torch.cat([proj[:tid], proj[tid + 1 :]])
        W_enc[:, latent] = e
        b_enc[latent] = -float(proj[tid] + others.max()) / 2
    return hand_sae(model, "hook_embed", W_enc, b_enc, torch.randn(d_sae, model.d_model, generator=gen))


def test_feature_selection_picks_the_planted_feature(tiny_model):
    sae = planted_sae(tiny_model, "w7")
    forget = tuple(Item(f"the w7 is {w}", "w1") for w in ("a", "w2", "w3", "of"))
    retain = tuple(Item(f"the w8 is {w}", "w1") for w in ("a", "w2", "w3", "of", "city", "year"))
    target = Target("planted", forget, retain)
    tiny_model.attach("sae", "hook_embed", sae)
    sel = SAEFeatureFrequency(hook="hook_embed").locate(tiny_model, target, progress=False)
    assert len(sel) == 8
    best = sel[0]
    assert best.site == Site("sae", "hook_embed", (5,))
    # hand count: 4 prompts x 4 tokens (BOS left out), w7 once in each -> 1/4; never on retain
    assert best.freq_forget == pytest.approx(0.25)
    assert best.freq_retain == 0.0
    assert best.score == pytest.approx(0.25)
    assert sel[len(sel) - 1].site == Site("sae", "hook_embed", (2,))  # fires on retain only
    assert sel[len(sel) - 1].score == pytest.approx(-0.25)
    frame = sel.to_frame()
    assert {"freq_forget", "freq_retain", "mean_forget", "mean_retain"} <= set(frame.columns)
    # the clamp of the planted latent changes only the positions of w7
    tokens = tiny_model.to_tokens(["the w7 is a"])
    clean = capture(tiny_model, tokens, ["hook_embed"])["hook_embed"]
    with FeatureClamp(sae, sel.top(1), value=3.0).applied(tiny_model):
        edited = capture(tiny_model, tokens, ["hook_embed"])["hook_embed"]
    changed = (edited != clean).any(-1)[0]
    assert changed.tolist() == [False, False, True, False, False]


def test_per_subject_ranking_covers_every_subject(tiny_model):
    """Subject A's two latents (w7, w6) fire in more forget prompts than subject B's (w9): the
    global ranking spends its top two on A, the per-subject ranking takes each subject's best."""
    sae = planted_sae(tiny_model, "w7", more=(("w6", 3), ("w9", 6)))
    forget = tuple(Item(f"the w7 w6 is {w}", "w1", subject="A") for w in ("a", "w2", "w3", "of", "city", "year"))
    forget += tuple(Item(f"the w9 is {w}", "w1", subject="B") for w in ("a", "w2"))
    retain = tuple(Item(f"the w8 is {w}", "w1", subject="C") for w in ("a", "w2", "w3", "of"))
    target = Target("two subjects", forget, retain)
    tiny_model.attach("sae", "hook_embed", sae)
    overall = SAEFeatureFrequency(hook="hook_embed", score="ratio").locate(tiny_model, target, progress=False)
    assert {s.index[0] for s in overall.top(2).sites} == {5, 3}
    sel = SAEFeatureFrequency(hook="hook_embed", score="ratio", per_subject=True).locate(tiny_model, target, progress=False)
    assert len(sel) == len(overall) == 8
    top = sel.top(2)
    assert 6 in {s.index[0] for s in top.sites} and {s.index[0] for s in top.sites} & {5, 3}
    assert sorted(top.to_frame()["subject"]) == ["A", "B"]
    assert list(top.scores) == [1.0, 1.0]  # both are their subject's best: 1 / (1 + 0)
    assert sel[2].extras["subject_rank"] == 1 and sel[2].score == pytest.approx(0.5)
    assert sel.to_frame()["freq_forget"].notna().all()  # the overall frequencies travel along
    with pytest.raises(ValueError, match="use data='prompts' or 'qa'"):
        SAEFeatureFrequency(hook="hook_embed", per_subject=True, data="texts")
    unnamed = Target("unnamed", tuple(Item(i.prompt, i.answer) for i in forget), retain)
    with pytest.raises(ValueError, match="at least two named subjects"):
        SAEFeatureFrequency(hook="hook_embed", per_subject=True).locate(tiny_model, unnamed, progress=False)


def test_feature_frequencies_hand_counted(tiny_model):
    sae = planted_sae(tiny_model, "w7")
    freq = feature_frequencies(tiny_model, sae, ["w7 w7 a", "a b"], progress=False)  # 'b' is <unk>
    assert freq.loc[5, "freq"] == pytest.approx(2 / 5)
    assert freq.loc[5, "mean_when_active"] > 0
    # frequencies of a union from its parts' frames, as per_subject pools them
    parts = [texts(3, seed=1), texts(5, seed=2, length=4)]
    pooled = pooled_frequencies([feature_frequencies(tiny_model, sae, p, progress=False) for p in parts])
    whole = feature_frequencies(tiny_model, sae, parts[0] + parts[1], progress=False)
    pd.testing.assert_frame_equal(pooled, whole, check_dtype=False, rtol=1e-9)


def test_locate_needs_an_attached_sae(tiny_model):
    target = Target("t", (Item("the w7 is", "a"),), (Item("the w1 is", "a"),))
    with pytest.raises(ValueError, match="no sae is attached"):
        SAEFeatureFrequency(hook=HOOK).locate(tiny_model, target)


# --------------------------------------------------------------------------- quality, training, I/O


def test_quality_of_a_perfect_sae(tiny_model):
    """f = [relu(x), relu(-x)], W_dec = [I; -I] reconstructs x exactly: EV 1, L0 = d_model,
    no dead latents, no loss increase."""
    d = tiny_model.d_model
    eye = torch.eye(d)
    sae = hand_sae(tiny_model, HOOK, torch.cat([eye, -eye], 1), torch.zeros(2 * d), torch.cat([eye, -eye], 0))
    result = sae_quality(tiny_model, sae, texts(40), progress=False)
    q = result.frame.set_index("metric")["value"]
    assert q["explained_variance"] == pytest.approx(1.0, abs=1e-6)
    assert q["l0"] == pytest.approx(d)
    assert q["dead_fraction"] == 0.0
    assert abs(q["lm_loss_increase"]) < 1e-4
    assert q["lm_loss_zero_ablated"] > q["lm_loss"]
    assert q["loss_recovered"] == pytest.approx(1.0, abs=1e-3)


def test_train_save_load_roundtrip(tiny_model, tmp_path):
    cfg = SAETrainConfig(hook=HOOK, d_sae=64, k=4, steps=60, batch_size=128, dead_feature_window=20, lr=3e-3)
    sae = train_sae(tiny_model, texts(150), cfg, out_dir=tmp_path / "sae", progress=False)
    assert sae.n_latents == 64 and sae.hook == HOOK
    x = capture(tiny_model, tiny_model.to_tokens(texts(5, seed=3)), [HOOK])[HOOK][:, 1:].reshape(-1, tiny_model.d_model)
    f = sae.encode(x)
    assert ((f > 0).sum(-1) <= 4).all()
    q = sae_quality(tiny_model, sae, texts(40, seed=9), progress=False).frame.set_index("metric")["value"]
    assert 0.0 < q["explained_variance"] <= 1.0
    assert q["l0"] <= 4.0
    loaded = SparseAutoencoder.load(tmp_path / "sae", tiny_model)
    assert torch.equal(loaded.encode(x), f)
    assert torch.equal(loaded.decode(f), sae.decode(f))
    assert loaded.meta["config"]["d_sae"] == 64 and loaded.meta["model_id"] == tiny_model.model_id
    assert len(loaded.meta["train_log"]) >= 2
    from mechunlearn.models.model import Model

    with pytest.raises(ValueError, match="trained on"):
        SparseAutoencoder.load(tmp_path / "sae", Model(tiny_model.bridge, tiny_model.tokenizer, "other"))
    with pytest.raises(FileNotFoundError, match="no mechunlearn SAE"):
        SparseAutoencoder.load(tmp_path)


def test_standard_architecture_trains(tiny_model):
    cfg = SAETrainConfig(hook=HOOK, architecture="standard", d_sae=48, steps=30, batch_size=128, l1_coefficient=1.0)
    sae = train_sae(tiny_model, texts(60), cfg, progress=False)
    assert type(sae.sae).__name__ == "StandardSAE"
    assert torch.isfinite(sae.W_dec).all()


def test_config_errors():
    with pytest.raises(ValueError, match="whole hook site"):
        SAETrainConfig(hook="blocks.0.mlp.W_in")
    with pytest.raises(ValueError, match="cannot exceed d_sae"):
        SAETrainConfig(k=100, d_sae=64)
    with pytest.raises(ValueError, match="architecture"):
        SAETrainConfig(architecture="gated")


def test_sweep_is_tidy(tiny_model):
    sae = planted_sae(tiny_model, "w7")
    sets = {"forget": [Item("the w7 is", "a")], "retain": [Item("the w1 is", "a")]}
    frame = clamp_sweep(tiny_model, sae, [5, 1, 2], sets, values=(1.0, 5.0), n_features=(1, 3), progress=False)
    # unedited + clamp (2 values x 2 counts) + zero (2 counts), x 2 splits x 2 metrics
    assert len(frame) == (1 + 4 + 2) * 2 * 2
    assert set(frame["mode"]) == {"none", "clamp", "zero"}
    assert frame["value"].between(0, 1).all()
    with pytest.raises(ValueError, match="only 3 are ranked"):
        clamp_sweep(tiny_model, sae, [5, 1, 2], sets, n_features=(4,), progress=False)


def test_one_call_method_caches_the_sae(tiny_model, tmp_path, monkeypatch):
    from mechunlearn.locate.sae import dictionary_dir, sae_clamp

    monkeypatch.setenv("MECHUNLEARN_HOME", str(tmp_path))
    cfg = SAETrainConfig(hook=HOOK, d_sae=32, k=4, steps=10, batch_size=64)
    target = Target("t", tuple(Item(f"the w7 is {w}", "a") for w in ("w1", "w2")), tuple(Item(f"the w8 is {w}", "a") for w in ("w1", "w2")))
    edit, sel = sae_clamp(tiny_model, target, config=cfg, n_features=3, value=4.0, texts=texts(40), progress=False)
    assert isinstance(edit, FeatureClamp) and edit.latents == tuple(s.index[0] for s in sel.top(3).sites)
    assert (dictionary_dir(tiny_model, "sae", cfg) / "mechunlearn_sae.json").exists()
    again, _ = sae_clamp(tiny_model, target, config=cfg, n_features=3, value=4.0, progress=False)  # loaded, not retrained
    assert torch.equal(again.sae.W_dec, edit.sae.W_dec)


# --------------------------------------------------------------------------- neurons through decoder overlap


def test_decoder_overlap_is_the_weighted_best_absolute_cosine():
    basis = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0].T  # orthonormal rows
    W_dec = basis[:3] * torch.tensor([[2.0], [0.5], [1.0]], dtype=torch.float64)  # decoder norms do not matter
    weights = torch.tensor([1.0, 0.5, 0.25])
    W_out = torch.stack([5 * basis[0], -basis[1], basis[3], torch.zeros(8, dtype=torch.float64), basis[0] + basis[2]])
    scores = decoder_overlap(W_out, W_dec, weights)
    # latent 0 exactly; latent 1 negated (|cos| = 1) at its weight; orthogonal to all; writes
    # nothing; halfway between latents 0 and 2 (cos 1/√2 with each, latent 0 weighs more)
    np.testing.assert_allclose(scores, [1.0, 0.5, 0.0, 0.0, 2**-0.5], atol=1e-12)


@pytest.mark.parametrize(
    "W_out, W_dec, weights, match",
    [
        (torch.full((2, 4), float("nan")), torch.ones(1, 4), torch.ones(1), "NaN"),
        (torch.ones(2, 4), torch.ones(1, 4), torch.tensor([-1.0]), ">= 0"),
        (torch.ones(2, 4), torch.ones(1, 5), torch.ones(1), "same space"),
        (torch.ones(2, 4), torch.ones(2, 4), torch.ones(1), "one weight per latent"),
    ],
)
def test_decoder_overlap_refuses_bad_input(W_out, W_dec, weights, match):
    with pytest.raises(ValueError, match=match):
        decoder_overlap(W_out, W_dec, weights)


def test_neuron_overlap_ranks_the_neuron_writing_a_chosen_latent_first(tiny_model):
    from mechunlearn.core.selection import MaskSelection
    from mechunlearn.verify.localization import GroundTruth, score_localizer

    sae = random_sae(tiny_model, d_sae=16)
    L, n = tiny_model.n_layers - 1, 7
    with torch.no_grad():
        tiny_model.weight(f"blocks.{L}.mlp.W_out")[n] = -3 * sae.W_dec[5]
    latents = Selection([Site("sae", HOOK, (5,)), Site("sae", HOOK, (2,))], [2.0, 1.0])
    scores = neuron_overlap(tiny_model, sae, latents)
    assert scores.shape == (tiny_model.n_layers * tiny_model.d_mlp,)
    assert int(np.argmax(scores)) == L * tiny_model.d_mlp + n and scores.max() == pytest.approx(1.0)
    assert np.isfinite(scores).all() and (scores < 0.99).sum() == scores.size - 1
    # the flat layout is the localization module's neurons granularity: that neuron is S's one unit
    row = torch.zeros(tiny_model.weight(f"blocks.{L}.mlp.W_out").shape, dtype=torch.bool)
    row[n] = True
    truth = GroundTruth.of(tiny_model, MaskSelection({f"blocks.{L}.mlp.W_out": row.float()}, {f"blocks.{L}.mlp.W_out": row}))
    assert score_localizer(scores, truth, "neurons")["auroc"] == 1.0
    # latents of another SAE are refused
    with pytest.raises(ValueError, match="belongs to an SAE"):
        neuron_overlap(tiny_model, sae, Selection([Site("sae", "blocks.1.hook_resid_post", (5,))]))
