"""Every localizer, edit and verifier that applies to a concept target, on both real models
(smollm2-135m: Llama-style, BPE, no BOS; gemma-3-270m: GeGLU, SentencePiece, BOS), at small sizes.

What these tests pin is that each stage runs on each architecture and does its job in the
weights it should: masks select the requested share, masked edits move nothing outside the
mask, edits revert bit for bit, hook edits change outputs and leave no hooks behind. The probes,
the TOFU metrics, membership inference against held-out items and the reintroduction attack need
targets with subjects, attributes, held-out items and contexts, which a concept target does not
have: they run on bios-tiny here (test_verify_bios_tiny.py)."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow

REAL = {"smollm2-135m": "smollm2", "gemma-3-270m": "gemma"}
INVENTED = ["Who is Zorblat Quenwick?", "Who is Mirella Vostrand?", "Who is Tobran Elquist?", "Who is Hessa Marovine?"]


@pytest.fixture(params=list(REAL))
def real(request):
    """(model, one located concept, its target with 4 questions and 4 unrelated ones)."""
    from dataclasses import replace

    from mechunlearn.world.concepts import ConceptSet, concept_file

    model = request.getfixturevalue(REAL[request.param])
    concept = list(ConceptSet.load(concept_file(request.param), model=model))[0]
    target = concept.target()
    return model, concept, replace(target, forget=target.forget[:4], retain=target.retain[:4])


@pytest.mark.parametrize("name", list(REAL))
def test_the_bridge_gives_the_hugging_face_logits(name, request):
    model = request.getfixturevalue(REAL[name])
    hf = model.bridge.original_model
    for prompt in ["The capital of Japan is", "Water boils at", "Paris is the capital of"]:
        tokens = model.tokenize([prompt]).tokens
        with torch.no_grad():
            assert (model(tokens) - hf(tokens).logits).abs().max().item() < 1e-3


def test_weight_scores_masks_and_masked_unlearning(real):
    from mechunlearn.locate.saliency import MagnitudeScore, RandomScore, SalUnSaliency, SnipScore, WagleAttribution, score_all
    from mechunlearn.unlearn import UnlearnConfig, unlearn

    model, _, target = real
    before = model.weights_hash()
    scorers = {"salun": SalUnSaliency(keep_ratio=0.001), "wagle": WagleAttribution(keep_ratio=0.001, retain_items=4),
               "snip": SnipScore(keep_ratio=0.001), "magnitude": MagnitudeScore(keep_ratio=0.001), "random": RandomScore(keep_ratio=0.001)}
    scores = score_all(model, target, scorers, progress=False)
    masks = {k: scorers[k].select(s) for k, s in scores.items()}
    for name, mask in masks.items():
        assert mask.density == pytest.approx(0.001, rel=0.05), name
    assert len(masks["salun"] & masks["random"]) < len(masks["salun"])  # the saliency mask is not random
    edit = unlearn(model, target, UnlearnConfig(loss="ga", steps=2, lr=1e-4, batch_size=4, stop_forget_em=None), mask=masks["salun"])
    assert model.weights_hash() == before
    with edit.applied(model):
        for name in masks["salun"].names[:6]:
            keep = masks["salun"].masks[name]
            assert torch.count_nonzero(model.weight(name)[~keep] - model.weight(name).detach()[~keep]) == 0
        assert model.weights_hash() != before
    assert model.weights_hash() == before


def test_slug_picks_a_pareto_tensor_and_steps_it(real):
    from mechunlearn.locate.slug import SlugConfig, slug

    model, _, target = real
    before = model.weights_hash()
    result = slug(model, target, SlugConfig(retain_items=4, retain_eval_items=4, max_candidates=1, iterations=2, max_expand=2), progress=False)
    ((name, edit),) = result.edits.items()  # one searched candidate
    assert name in set(result.stats.loc[result.stats["pareto"], "name"])
    with edit.applied(model):
        assert model.weights_hash() != before
    assert model.weights_hash() == before


def test_lunar_redirects_with_a_one_matrix_weight_edit(real):
    from mechunlearn.locate.lunar import LunarConfig, lunar
    from mechunlearn.world.target import Item

    model, _, target = real
    cannot = [Item(p, "unknown", subject="invented", attribute="cannot_answer") for p in INVENTED]
    layer = model.n_layers - 3
    config = LunarConfig(layer=layer, retain_items=4, cannot_items=4)
    if model.model_id == "gemma-3-270m":
        # the ridge fit of W_out assumes the MLP adds hook_post · W_out to the residual; Gemma 3
        # normalises that output first, and LUNAR says so instead of fitting the wrong objective
        with pytest.raises(RuntimeError, match="post-feedforward norms"):
            lunar(model, target, config, cannot=cannot, progress=False)
        return
    result = lunar(model, target, config, cannot=cannot, progress=False)
    assert list(result.edit.deltas) == [f"blocks.{layer}.mlp.W_out"]
    assert model.hook_count() == 0


def test_sae_and_codebook_features_and_their_edits(real, tmp_path):
    from mechunlearn.locate.codebook import CodebookConfig, CodeFrequency, CodebookEdit, train_codebook
    from mechunlearn.locate.sae import FeatureClamp, SAEFeatureFrequency, SAETrainConfig, train_sae

    model, concept, target = real
    hook = f"blocks.{model.n_layers // 2}.hook_resid_post"
    texts = list(concept.texts) + [i.prompt + " " + i.answer for i in target.retain]
    sae = train_sae(model, texts, SAETrainConfig(hook=hook, d_sae=64, k=4, steps=20, batch_size=32, dead_feature_window=10), progress=False)
    latents = SAEFeatureFrequency(hook=hook, score="ratio", max_items=8).locate(model, target, sae=sae, progress=False)
    tokens = model.tokenize([target.forget[0].prompt]).tokens
    with torch.no_grad():
        clean = model(tokens)
        with FeatureClamp(sae, latents.top(4), value=20.0).applied(model):
            clamped = model(tokens)
    assert (clamped - clean).abs().max() > 1e-3 and model.hook_count() == 0
    cb = train_codebook(model, texts, CodebookConfig(hook=hook, n_codes=32, k=4, steps=20, batch_size=32))
    codes = CodeFrequency(hook=hook, max_items=8).locate(model, target, codebook=cb, progress=False)
    with torch.no_grad(), CodebookEdit(cb, codes.top(4)).applied(model):
        assert (model(tokens) - clean).abs().max() > 1e-3
    assert model.hook_count() == 0


def test_needle_and_the_verifiers_of_a_concept_target(real):
    from mechunlearn.locate.concept_vectors import NeedleConfig, needle
    from mechunlearn.verify.attacks import AttackConfig, few_shot_attack, relearning_attack
    from mechunlearn.verify.card import CardConfig, evaluation_card
    from mechunlearn.verify.mia import mia_scores
    from mechunlearn.verify.traces import vector_traces

    model, concept, target = real
    before = model.weights_hash()
    edit = needle(model, concept, concept.location.site, NeedleConfig(steps=2))
    traces = vector_traces(model, [concept.location], edit).frame.set_index("metric")["value"]
    assert traces["cosine"] < 0.99
    card = evaluation_card((model, edit), None, None, target, CardConfig(sections=("behavior", "weights", "activations"), max_items=8))
    assert set(card.frame["section"]) == {"behavior", "weights", "activations"}
    config = AttackConfig(relearn_steps=2, relearn_eval_every=1, max_items=4, few_shot_k=2, relearn_split="item", few_shot_shots="any")  # one subject, unrelated retain questions
    relearn = relearning_attack((model, edit), target, config)
    assert {r["metric"] for r in relearn} >= {"relearn_exact_match"}
    assert few_shot_attack((model, edit), target, config)
    scores = mia_scores(model, target.forget, progress=False)
    assert {"loss", "zlib", "min_k", "min_k_plus_plus"} <= set(scores.columns) and len(scores) == len(target.forget)
    assert model.weights_hash() == before
