"""Concept vectors on a tiny random model: scan against a naive loop, planted vectors, validation,
Needle (exact mask and revert), the localizer, and concept files."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from mechunlearn.core import Site, WeightEdit
from mechunlearn.core.registry import from_dict
from mechunlearn.locate import concept_vectors as cv
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.world.concepts import Concept, ConceptFileMismatch, ConceptSet
from mechunlearn.world.target import Item
from tests.conftest import make_tiny_model

K = 8


def w_u(model):
    return model.weight("unembed.W_U").detach().float()


def naive_scores(model, refs: dict[str, list[int]], k: int, scoring: str, signs: str, final_norm: bool = False):
    """One vector at a time, one concept at a time: the obvious, slow definition."""
    unembed = w_u(model)
    if final_norm:
        unembed = model.weight("ln_final.w").detach()[:, None] * unembed
    out = {}
    for name, ids in refs.items():
        ref = set(ids)
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(ref)))) if scoring == "ndcg" else min(k, len(ref))
        for layer in range(model.n_layers):
            w_out = model.weight(f"blocks.{layer}.mlp.W_out").detach()
            for i in range(model.d_mlp):
                logits = w_out[i] @ unembed
                best, best_sign = -1.0, 1
                for sign, largest in ((1, True), (-1, False)) if signs == "both" else ((1, True),):
                    top = logits.topk(k, largest=largest).indices.tolist()
                    gain = sum((1 / math.log2(r + 2) if scoring == "ndcg" else 1.0) for r, t in enumerate(top) if t in ref)
                    if gain / ideal > best:
                        best, best_sign = gain / ideal, sign
                out[(name, layer, i)] = (best, best_sign)
    return out


def test_score_top_ids_by_hand():
    ids = torch.tensor([[5, 3, 9], [1, 2, 4]])
    ref = cv.reference_matrix({"a": [3, 9], "b": [1]}, d_vocab=10)
    scores, hits = cv.score_top_ids(ids, ref, "ndcg")
    ideal_a = 1 + 1 / math.log2(3)
    assert scores[0, 0].item() == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / ideal_a)
    assert scores[0, 1].item() == 0.0
    assert scores[1, 1].item() == pytest.approx(1.0)  # b's only token at rank 0: ideal
    assert hits.tolist() == [[2, 0], [0, 1]]
    overlap, _ = cv.score_top_ids(ids, ref, "overlap")
    assert overlap.tolist() == [[1.0, 0.0], [0.0, 1.0]]


@pytest.mark.parametrize("scoring,signs,final_norm", [("ndcg", "both", False), ("overlap", "positive", False), ("ndcg", "positive", True)])
def test_scan_matches_naive_loop(tiny_model, scoring, signs, final_norm):
    refs = {"a": [4, 5, 6, 7], "b": [10, 20], "c": [30, 31, 32, 33, 34, 35]}
    config = cv.ScanConfig(k=K, scoring=scoring, signs=signs, final_norm=final_norm, chunk_size=7, n_top_tokens=4)
    found = cv.scan(tiny_model, refs, config, progress=False)
    expected = naive_scores(tiny_model, refs, K, scoring, signs, final_norm)
    assert found.scores.shape == (3, tiny_model.n_layers, tiny_model.d_mlp)
    for (name, layer, i), (score, sign) in expected.items():
        c = found.concepts.index(name)
        assert found.scores[c, layer, i].item() == pytest.approx(score, abs=1e-5)
        if score > 0:
            assert found.signs[c, layer, i].item() == sign
    # top ids are the vector's best tokens, best first
    v = tiny_model.weight("blocks.1.mlp.W_out[3]").detach()
    unembed = w_u(tiny_model) if not final_norm else tiny_model.weight("ln_final.w").detach()[:, None] * w_u(tiny_model)
    assert found.top_ids[1, 3].tolist() == (v @ unembed).topk(4).indices.tolist()


def test_chunk_size_does_not_change_scores(tiny_model):
    refs = {"a": [4, 5, 6], "b": [11, 12]}
    one = cv.scan(tiny_model, refs, cv.ScanConfig(k=K, chunk_size=1), progress=False)
    all_ = cv.scan(tiny_model, refs, cv.ScanConfig(k=K, chunk_size=10_000), progress=False)
    assert torch.equal(one.scores, all_.scores)
    assert torch.equal(one.top_ids, all_.top_ids)


def plant(model, site: str, tokens: list[int], sign: float) -> None:
    direction = w_u(model)[:, tokens].sum(1)
    with torch.no_grad():
        model.weight(site).copy_(sign * 50 * direction / direction.norm())


def test_scan_finds_planted_vectors_of_either_sign(tiny_model):
    plus, minus = [8, 9, 10], [40, 41, 42]
    plant(tiny_model, "blocks.1.mlp.W_out[5]", plus, +1)
    plant(tiny_model, "blocks.0.mlp.W_out[9]", minus, -1)
    refs = {"plus": plus, "minus": minus}
    found = cv.scan(tiny_model, refs, cv.ScanConfig(k=K, signs="both"), progress=False)
    best = found.selection("plus", top=3)
    assert best.sites[0] == Site.parse("blocks.1.mlp.W_out[5]")
    assert best[0].sign == 1 and best[0].hits == 3 and best.scores[0] == pytest.approx(1.0)
    assert set(best[0].top_tokens[:3]) == {found.vocab[t] for t in plus}
    neg = found.selection("minus", top=1)
    assert neg.sites[0] == Site.parse("blocks.0.mlp.W_out[9]") and neg[0].sign == -1
    # the paper's positive-only projection cannot see the negated vector
    positive = cv.scan(tiny_model, refs, cv.ScanConfig(k=K, signs="positive"), progress=False)
    assert positive.selection("minus", top=1).sites[0] != Site.parse("blocks.0.mlp.W_out[9]")
    frame = found.to_frame(top=2)
    assert list(frame["concept"]) == ["plus", "plus", "minus", "minus"] and list(frame["rank"]) == [0, 1, 0, 1]


def make_gated_model():
    """The tiny model's shape with a SwiGLU MLP (``silu(gate) · up``)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    from mechunlearn.models.model import Model
    from tests.conftest import make_tokenizer

    tok = make_tokenizer()
    cfg = TransformerBridgeConfig(
        d_model=32, d_head=8, n_heads=4, n_layers=2, n_ctx=32, d_vocab=len(tok), d_mlp=64,
        act_fn="silu", gated_mlp=True, normalization_type="LN", positional_embedding_type="standard", seed=0,
    )
    return Model(TransformerBridge.boot_native(cfg), tok, "tiny-gated")


def test_default_signs_follow_the_mlp_type(tiny_model):
    # a GELU neuron only adds +v in any real amount: a concept in v's bottom tokens is pushed
    # down, so the non-gated default must not report it; a gated neuron's sign is free
    minus = [40, 41, 42]
    gated = make_gated_model()
    assert gated.gated_mlp and not tiny_model.gated_mlp
    for model in (tiny_model, gated):
        plant(model, "blocks.0.mlp.W_out[9]", minus, -1)
    plain = cv.scan(tiny_model, {"minus": minus}, cv.ScanConfig(k=K), progress=False)
    assert plain.config.signs == "positive" and plain.bottom_ids is None
    assert plain.selection("minus", top=1).sites[0] != Site.parse("blocks.0.mlp.W_out[9]")
    assert int(plain.signs.abs().min()) == 1 and int(plain.signs.min()) == 1
    glu = cv.scan(gated, {"minus": minus}, cv.ScanConfig(k=K), progress=False)
    assert glu.config.signs == "both"
    best = glu.selection("minus", top=1)
    assert best.sites[0] == Site.parse("blocks.0.mlp.W_out[9]") and best[0].sign == -1


def test_selection_of_all_vectors_is_sorted_and_complete(tiny_model):
    found = cv.scan(tiny_model, {"a": [4, 5]}, cv.ScanConfig(k=K), progress=False)
    sel = found.selection("a")
    assert len(sel) == tiny_model.n_layers * tiny_model.d_mlp
    assert (sel.scores[:-1] >= sel.scores[1:]).all()
    assert sel.meta["concept"] == "a"
    with pytest.raises(KeyError, match="was not scanned"):
        found.selection("nope")


def test_scan_rejects_bad_input(tiny_model):
    with pytest.raises(ValueError, match="references is empty"):
        cv.scan(tiny_model, {}, cv.ScanConfig(k=K))
    with pytest.raises(ValueError, match="no reference tokens"):
        cv.scan(tiny_model, {"a": []}, cv.ScanConfig(k=K))
    with pytest.raises(ValueError, match="out of range"):
        cv.scan(tiny_model, {"a": [10_000]}, cv.ScanConfig(k=K))
    with pytest.raises(ValueError, match="layers \\[5\\] out of range"):
        cv.scan(tiny_model, {"a": [4]}, cv.ScanConfig(k=K, layers=(0, 5)))
    with pytest.raises(ValueError, match="k must be in"):
        cv.scan(tiny_model, {"a": [4]}, cv.ScanConfig(k=10_000))
    with pytest.raises(ValueError, match="scoring"):
        cv.ScanConfig(scoring="bm25")


def test_reference_ids_skip_unknown_and_multi_token_words(tiny_model):
    ids = cv.reference_ids(tiny_model, ["city", "born", "zzz unknown"])
    assert ids == [tiny_model.encode("city")[0], tiny_model.encode("born")[0]]
    with pytest.raises(ValueError, match="single token"):
        cv.reference_ids(tiny_model, ["zzz"])


# ----------------------------------------------------------------- a concept the tiny model "knows"
PROMPTS = ["where was w1 born ?", "the city of w2 is", "who works at w3 ?", "what year was w4 born ?", "which city is w5 in ?"]
OTHER = ["the a of is", "w10 w11 w12", "when was w20 at w21 ?", "answer : w30"]


def own_items(model, prompts, subject):
    """Items whose answers are the model's own first greedy word (so it 'knows' them)."""
    outs = model.generate(prompts, max_new_tokens=1)
    items = [Item(p, o.strip(), subject=subject) for p, o in zip(prompts, outs) if o.strip() and "<" not in o]
    assert len(items) >= 3, "the random model produced only special tokens"
    return tuple(items)


def tiny_concept(model, name="w-things", words=("w1", "w2", "w3")) -> Concept:
    return Concept(
        name=name,
        reference_words=words,
        questions=own_items(model, PROMPTS, name),
        unrelated=own_items(model, OTHER, "other"),
        texts=("w1 was born in w2 .", "w3 works at w2 .", "the city of w1 is w2 ."),
        category="test",
    )


def test_validate_measures_and_reverts(tiny_model):
    concept = tiny_concept(tiny_model)
    before = tiny_model.weights_hash()
    sites = ["blocks.1.mlp.W_out[3]", "blocks.0.mlp.W_out[7]"]
    tiny = cv.validate(tiny_model, concept, sites, cv.ValidateConfig(sigma=1e-9, max_new_tokens=3))
    assert tiny_model.weights_hash() == before
    frame = tiny.frame
    assert set(frame["metric"]) == set(cv.VALIDATION_METRICS)
    assert set(frame["split"]) == {"concept", "unrelated"}
    noised = frame[frame["state"] == "noised"]
    assert noised.loc[noised["metric"] == "bleu", "value"].eq(1.0).all()  # negligible noise: same answers
    summary = cv.validation_summary(tiny)
    assert list(summary["site"]) == sites
    assert summary["bleu_gap"].abs().max() < 1e-9
    assert (summary["concept_exact_match_before"] == 1.0).all()  # the items are its own answers
    # large noise on every vector of the last layer's MLP: answers must change somewhere
    big = cv.ValidateConfig(sigma=200.0, max_new_tokens=3, seeds=(0, 1))
    loud = cv.validation_summary(cv.validate(tiny_model, concept, [f"blocks.1.mlp.W_out[{i}]" for i in range(0, 64, 8)], big))
    assert (loud[["concept_bleu", "unrelated_bleu"]] < 1.0).any().any()
    assert tiny_model.weights_hash() == before


def test_validate_rejects_bad_sites(tiny_model):
    concept = tiny_concept(tiny_model)
    with pytest.raises(ValueError, match="not a value vector"):
        cv.validate(tiny_model, concept, "blocks.0.mlp.W_in", cv.ValidateConfig(max_new_tokens=1))
    with pytest.raises(ValueError, match="out of range"):
        cv.validate(tiny_model, concept, "blocks.7.mlp.W_out[1]", cv.ValidateConfig(max_new_tokens=1))
    with pytest.raises(ValueError, match="sigma"):
        cv.ValidateConfig(sigma=0)


def test_validation_summary_gaps_by_hand():
    import pandas as pd

    rows = []
    for split, bleu, em_after in (("concept", 0.25, 0.5), ("unrelated", 0.75, 1.0)):
        for state, metric, value in (("noised", "bleu", bleu), ("noised", "rouge_l", bleu), ("noised", "exact_match", em_after), ("unedited", "exact_match", 1.0), ("noised", "answer_logprob", -2.0), ("unedited", "answer_logprob", -1.0)):
            rows.append({"concept": "c", "site": "blocks.0.mlp.W_out[1]", "layer": 0, "index": 1, "seed": 0, "state": state, "split": split, "metric": metric, "value": value})
    summary = cv.validation_summary(pd.DataFrame(rows)).iloc[0]
    assert summary["bleu_gap"] == pytest.approx(0.5)
    assert summary["em_drop_gap"] == pytest.approx(0.5)
    config = cv.ConceptFileConfig(min_bleu_gap=0.2, min_drop_ratio=2.0)
    assert config.passes(summary)  # drops 0.75 vs 0.25: 3x
    assert not cv.ConceptFileConfig(min_drop_ratio=4.0).passes(summary)


def test_row_mask_selects_one_row(tiny_model):
    mask = cv.row_mask(tiny_model, "blocks.1.mlp.W_out[5]")
    assert mask.names == ["blocks.1.mlp.W_out"]
    mask.assert_count_is(tiny_model.d_model)
    assert mask.masks["blocks.1.mlp.W_out"][5].all()
    with pytest.raises(ValueError, match="not a value vector"):
        cv.row_mask(tiny_model, "blocks.1.mlp.W_out")


def test_needle_changes_only_its_vector_and_reverts_exactly(tiny_model):
    from mechunlearn.models.text import encode_qa, answer_nll

    concept = tiny_concept(tiny_model)
    site = "blocks.1.mlp.W_out[5]"
    before = {n: w.detach().clone() for n, w in tiny_model.named_weights()}
    edit = cv.needle(tiny_model, concept, site, cv.NeedleConfig(steps=8, lr=0.05, batch_size=3))
    assert all(torch.equal(w, before[n]) for n, w in tiny_model.named_weights()), "needle() must leave the model unchanged"
    texts = encode_qa(tiny_model, [""] * len(concept.texts), list(concept.texts))
    with torch.no_grad():
        nll_before = answer_nll(tiny_model, texts).mean().item()
    with edit.applied(tiny_model):
        changed = {n for n, w in tiny_model.named_weights() if not torch.equal(w, before[n])}
        assert changed == {"blocks.1.mlp.W_out"}
        diff = (tiny_model.weight("blocks.1.mlp.W_out").detach() - before["blocks.1.mlp.W_out"]).abs().sum(-1)
        assert diff[5] > 0 and diff.nonzero().flatten().tolist() == [5]
        after_edit = tiny_model.weight(site).detach().clone()
        with torch.no_grad():
            nll_edited = answer_nll(tiny_model, texts).mean().item()
    assert all(torch.equal(w, before[n]) for n, w in tiny_model.named_weights())
    assert nll_edited > nll_before
    # the gradient ascent moved the vector beyond the noise alone
    with WeightEdit(site, "noise", sigma=5.0, relative=True, seed=0).applied(tiny_model):
        noise_only = tiny_model.weight(site).detach().clone()
    assert not torch.equal(noise_only, after_edit)
    # applying again gives the same weights (seeded noise + stored delta)
    with edit.applied(tiny_model):
        assert torch.equal(tiny_model.weight(site).detach(), after_edit)


def test_needle_needs_texts(tiny_model):
    concept = tiny_concept(tiny_model)
    bare = Concept(concept.name, concept.reference_words, concept.questions, concept.unrelated, texts=())
    with pytest.raises(ValueError, match="no forget texts"):
        cv.needle(tiny_model, bare, "blocks.1.mlp.W_out[5]", cv.NeedleConfig(steps=1))


def test_registered_localizer_locates_a_concept_target(tiny_model):
    concept = tiny_concept(tiny_model)
    localizer = from_dict(LOCALIZERS, {"name": "concept_vectors", "k": K})
    sel = localizer.locate(tiny_model, concept.target(), progress=False)
    assert len(sel) == tiny_model.n_layers * tiny_model.d_mlp
    assert sel.meta["concept"] == concept.name
    direct = cv.scan(tiny_model, {concept.name: cv.reference_ids(tiny_model, concept.reference_words)}, cv.ScanConfig(k=K), progress=False)
    assert sel.sites[:5] == direct.selection(concept.name, top=5).sites
    from mechunlearn.world.target import Target

    with pytest.raises(ValueError, match="reference_words"):
        localizer.locate(tiny_model, Target("plain", forget=concept.questions, retain=()))


def test_answer_known():
    assert cv.answer_known("Tokyo", " Tokyo.\n\nThe Japanese")
    assert cv.answer_known("West Africa", " West Africa, bordered")
    assert not cv.answer_known("India", " the Indian subcontinent")  # a different word
    assert not cv.answer_known("Paris", " a b c d e Paris", n_words=5)  # too late
    with pytest.raises(ValueError, match="no words"):
        cv.answer_known("  ", "x")


def planted_concept(model) -> tuple[Concept, Concept]:
    """Make value vector 5 of layer 1 write w1/w2/w3 and sharpen its neuron, which then fires
    (pre-activation > 1) on some prompts and is silent (< −6, GELU ≈ 0) on others. Returns a
    concept whose questions are the firing prompts (the model answers w1: the vector is the
    concept) and an idle concept whose vectors nothing depends on; both share the silent
    prompts as unrelated questions."""
    from mechunlearn.models.activations import capture

    plant(model, "blocks.1.mlp.W_out[5]", [model.encode(w)[0] for w in ("w1", "w2", "w3")], +1)
    with torch.no_grad():
        model.weight("blocks.1.mlp.W_in")[:, 5] *= 8
        model.weight("blocks.1.mlp.b_in")[5] *= 8
    pool = [f"{a} w{i} w{j} ?" for a in ("where was", "who is", "the city of") for i in range(10, 40, 3) for j in range(12, 40, 5)]
    tokens = model.to_tokens(pool)
    pre = capture(model, tokens, ["blocks.1.mlp.hook_pre"])["blocks.1.mlp.hook_pre"][..., 5]
    last = pre[torch.arange(len(pool)), (tokens != model.pad_token_id).sum(1) - 1]
    order = last.argsort().tolist()
    on, off, idle = [pool[i] for i in order[-6:]], [pool[i] for i in order[:6]], [pool[i] for i in order[20:26]]
    assert last[order[-6]] > 1 and last[order[5]] < -6
    unrelated = own_items(model, off, "other")
    return (Concept("planted", ("w1", "w2", "w3"), own_items(model, on, "planted"), unrelated, texts=("w1 w2 w3 .",), category="test"),
            Concept("idle", ("w34", "w35"), own_items(model, idle, "idle"), unrelated, texts=("w34 .",), category="test"))


def test_build_concept_file_gates_on_the_bleu_gap_is_deterministic_and_checks_the_model(tiny_model, tmp_path):
    concept, idle = planted_concept(tiny_model)
    unknown = Concept(
        name="unknown",
        reference_words=("w9",),
        questions=tuple(Item(p, "Paris") for p in PROMPTS[:4]),  # not even in its vocabulary
        unrelated=concept.unrelated,
        texts=("w9 .",),
    )
    config = cv.ConceptFileConfig(scan=cv.ScanConfig(k=K), validate=cv.ValidateConfig(max_new_tokens=3), n_candidates=2, min_questions=3)
    assert (config.min_bleu_gap, config.min_drop_ratio) == (0.2, 2.0)  # the shipped gates
    concepts = ConceptSet(tiny_model.model_id, (concept, idle, unknown))
    path = tmp_path / "tiny.json"
    located = cv.build_concept_file(tiny_model, concepts, path, config, progress=False)
    first = path.read_bytes()
    # the gate keeps the planted vector (noise on it changes the concept's answers only) and
    # rejects the idle concept, whose best candidate changes nothing specific to it
    assert located.names == [concept.name]
    assert located[concept.name].location.site == Site.parse("blocks.1.mlp.W_out[5]")
    reasons = {r["concept"]: r["reason"] for r in located.meta["rejected"]}
    assert reasons.keys() == {"idle", "unknown"} and reasons["idle"] == "no candidate passed validation"
    assert "answers 0 of its questions" in reasons["unknown"]
    idle_gap = next(r["best_bleu_gap"] for r in located.meta["rejected"] if r["concept"] == "idle")
    record = json.loads(first)["concepts"][0]
    for key in ("site", "layer", "index", "top_tokens", "reference_tokens", "questions", "unrelated_questions", "texts", "validation"):
        assert key in record
    gap = record["validation"]["bleu_gap"]
    assert gap > 0.5 > idle_gap and record["validation"]["unrelated_bleu"] > 0.8
    # a gate above the planted vector's gap rejects it too: nothing is left to write
    with pytest.raises(ValueError, match="no concept passed validation"):
        cv.build_concept_file(tiny_model, concepts, tmp_path / "strict.json", replace(config, min_bleu_gap=gap + 0.01), progress=False)
    assert not (tmp_path / "strict.json").exists()
    assert json.loads(first)["weights_hash"] == tiny_model.weights_hash()
    cv.build_concept_file(tiny_model, concepts, path, config, progress=False)
    assert path.read_bytes() == first, "regenerating must give the same bytes"

    loaded = ConceptSet.load(path, model=tiny_model)
    assert loaded.located and loaded[concept.name].location.site == located[concept.name].location.site
    other = make_tiny_model(seed=1)
    other.model_id = tiny_model.model_id
    with pytest.raises(ConceptFileMismatch, match="force=True"):
        ConceptSet.load(path, model=other)
    assert ConceptSet.load(path, model=other, force=True).names == [concept.name]
    with WeightEdit("blocks.0.mlp.W_out[1]", "zero").applied(tiny_model):
        with pytest.raises(ConceptFileMismatch, match="edit is applied"):
            ConceptSet.load(path, model=tiny_model)


def test_rank_of(tiny_model):
    plant(tiny_model, "blocks.1.mlp.W_out[5]", [8, 9, 10], +1)
    found = cv.scan(tiny_model, {"a": [8, 9, 10]}, cv.ScanConfig(k=K), progress=False)
    order = found.selection("a").sites
    assert found.rank_of("a", "blocks.1.mlp.W_out[5]") == 0
    assert found.rank_of("a", order[7]) == 7
    with pytest.raises(ValueError, match="not one of the scanned"):
        found.rank_of("a", "blocks.1.mlp.W_in")


def test_greedy_ids_match_generate_and_reuse_a_reference(tiny_model):
    prompts = PROMPTS + OTHER
    plain = cv.greedy_ids(tiny_model, prompts, 5, batch_size=3)
    assert cv._decode(tiny_model, plain) == tiny_model.generate(prompts, max_new_tokens=5)
    # the model's own continuations as reference: nothing to decode further, same answer
    assert cv.greedy_ids(tiny_model, prompts, 5, reference=plain) == plain
    # a wrong or truncated reference is corrected from where it departs
    wrong = [[4, 4, 4, 4, 4]] * len(prompts)
    short = [row[:2] for row in plain]
    assert cv.greedy_ids(tiny_model, prompts, 5, reference=wrong, batch_size=4) == plain
    assert cv.greedy_ids(tiny_model, prompts, 5, reference=short) == plain
    with WeightEdit("blocks.1.mlp.W_out", "noise", sigma=0.5).applied(tiny_model):
        edited = cv.greedy_ids(tiny_model, prompts, 5)
        assert cv.greedy_ids(tiny_model, prompts, 5, reference=plain) == edited
    with pytest.raises(ValueError, match="reference continuations"):
        cv.greedy_ids(tiny_model, prompts, 5, reference=plain[:2])


def test_needle_subjects_edits_each_subjects_planted_vector(tiny_model):
    # two "people" whose answers are planted in two value vectors: Needle per subject must find
    # and change exactly those two rows, train on the texts naming each person, and revert exactly
    from mechunlearn.world.target import Target

    plant(tiny_model, "blocks.1.mlp.W_out[5]", [8, 9], +1)
    plant(tiny_model, "blocks.0.mlp.W_out[9]", [40, 41], +1)
    vocab = cv.vocabulary(tiny_model)
    forget = (
        Item("where was w1 born ?", vocab[8], subject="w1"), Item("what does w1 do ?", vocab[9], subject="w1"),
        Item("where was w2 born ?", vocab[40], subject="w2"), Item("what does w2 do ?", vocab[41], subject="w2"),
    )
    texts = (f"w1 was born in {vocab[8]} .", f"w2 was born in {vocab[40]} .", "w5 is someone else .")
    target = Target("people", forget, own_items(tiny_model, OTHER, "other"), forget_texts=texts)
    before = {n: w.detach().clone() for n, w in tiny_model.named_weights()}
    edit, sites = cv.needle_subjects(tiny_model, target, cv.NeedleConfig(steps=3, lr=0.05, batch_size=2), progress=False)
    assert sites == {"w1": "blocks.1.mlp.W_out[5]", "w2": "blocks.0.mlp.W_out[9]"}
    assert all(torch.equal(w, before[n]) for n, w in tiny_model.named_weights())
    with edit.applied(tiny_model):
        for name in ("blocks.0.mlp.W_out", "blocks.1.mlp.W_out"):
            rows = (tiny_model.weight(name).detach() != before[name]).any(-1).nonzero().flatten().tolist()
            assert rows == ([9] if name.startswith("blocks.0") else [5])
        assert {n for n, w in tiny_model.named_weights() if not torch.equal(w, before[n])} == {"blocks.0.mlp.W_out", "blocks.1.mlp.W_out"}
    assert all(torch.equal(w, before[n]) for n, w in tiny_model.named_weights())
    with pytest.raises(ValueError, match="no forget text names"):
        cv.needle_subjects(tiny_model, Target("bare", forget, target.retain, forget_texts=("nobody here .",)), progress=False)
