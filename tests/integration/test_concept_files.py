"""Concept vectors on the real models: the checked-in files (re-validated on a sample), scan,
validation and Needle."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

REAL = ["smollm2-135m", "gemma-3-270m"]


@pytest.fixture(params=REAL)
def real(request):
    """(model, its located ConceptSet) for each real model (models are session fixtures)."""
    from mechunlearn.world.concepts import ConceptSet, concept_file

    model = request.getfixturevalue({"smollm2-135m": "smollm2", "gemma-3-270m": "gemma"}[request.param])
    return model, ConceptSet.load(concept_file(request.param), model=model)


def test_file_has_at_least_20_validated_concepts(real):
    from mechunlearn.locate.concept_vectors import ConceptFileConfig

    _, concepts = real
    assert concepts.located and len(concepts) >= 20
    config = ConceptFileConfig()
    for c in concepts:
        assert len(c.questions) >= 4 and c.texts and c.unrelated, c.name
        assert config.passes(c.location.validation), c.name


def test_a_sample_of_the_file_validates_again_on_the_model(real):
    """The recorded numbers are the model's, not the file's word for it: the concept with the
    weakest gap (the first to fall below the bar if anything drifted) is validated afresh, and
    its questions are answered."""
    from mechunlearn.locate.concept_vectors import ConceptFileConfig, ValidateConfig, check_questions, validate, validation_summary

    model, concepts = real
    by_gap = sorted(concepts, key=lambda c: c.location.validation["bleu_gap"])
    sample = [by_gap[0]]
    for concept in sample:
        summary = validation_summary(validate(model, concept, concept.location.site, ValidateConfig())).iloc[0]
        for key in ("concept_bleu", "unrelated_bleu", "bleu_gap"):
            assert summary[key] == pytest.approx(concept.location.validation[key], abs=2e-3), (concept.name, key)
        assert ConceptFileConfig().passes(summary.to_dict()), concept.name
    asked = check_questions(model, concepts.subset([c.name for c in sample]))
    assert asked["known"].all(), asked[~asked["known"]][["prompt", "answer", "generated"]].to_string()


def test_recorded_top_tokens_are_the_vectors_tokens(real):
    from mechunlearn.locate.concept_vectors import top_token_ids, unembedding, vocabulary

    model, concepts = real
    vocab = vocabulary(model)
    for c in list(concepts)[:5]:
        loc = c.location
        v = model.weight(loc.site).detach()[None] * loc.sign
        ids = top_token_ids(v, unembedding(model), len(loc.top_tokens))[0].tolist()
        assert [vocab[i] for i in ids] == list(loc.top_tokens), c.name
        assert set(loc.reference_ids) & set(top_token_ids(v, unembedding(model), 200)[0].tolist()), c.name


def test_scan_ranks_the_japan_vector_first(smollm2):
    from mechunlearn.locate.concept_vectors import ScanConfig, reference_ids, scan

    refs = {"Japan": reference_ids(smollm2, ["Japan", "Japanese", "Tokyo", "Osaka", "Kyoto", "Shinto", "samurai", "sushi"])}
    found = scan(smollm2, refs, ScanConfig(layers=(23, 28)), progress=False)
    best = found.selection("Japan", top=2)
    assert [str(s) for s in best.sites] == ["blocks.23.mlp.W_out[1508]", "blocks.28.mlp.W_out[258]"]
    assert " Japanese" in best[0].top_tokens[:3] and best[0].hits >= 6


def test_a_file_for_other_weights_is_refused(real):
    from mechunlearn.core import WeightEdit
    from mechunlearn.world.concepts import ConceptFileMismatch, ConceptSet, concept_file

    model, _ = real
    with WeightEdit("blocks.0.mlp.W_out[0]", "zero").applied(model):
        with pytest.raises(ConceptFileMismatch, match="force=True"):
            ConceptSet.load(concept_file(model.model_id), model=model)


def test_needle_on_one_concept(smollm2):
    from mechunlearn.locate.concept_vectors import NeedleConfig, needle
    from mechunlearn.verify.behavior import behavior
    from mechunlearn.verify.traces import vector_traces

    from mechunlearn.world.concepts import ConceptSet, concept_file

    concepts = ConceptSet.load(concept_file("smollm2-135m"), model=smollm2)
    concept = max(concepts, key=lambda c: c.location.validation["bleu_gap"])
    before = smollm2.weights_hash()

    target = concept.target()
    edit = needle(smollm2, concept, concept.location.site, NeedleConfig(steps=10))
    plain = behavior(smollm2, target, splits=("forget", "retain")).summary(("split", "metric"))["exact_match"]
    with edit.applied(smollm2):
        edited = behavior(smollm2, target, splits=("forget", "retain")).summary(("split", "metric"))["exact_match"]
    assert plain["forget"] - edited["forget"] > plain["retain"] - edited["retain"]
    traces = vector_traces(smollm2, [concept.location], edit).frame.set_index("metric")["value"]
    assert traces["cosine"] < 0.5 and traces["jaccard"] < 0.5
    assert smollm2.weights_hash() == before
