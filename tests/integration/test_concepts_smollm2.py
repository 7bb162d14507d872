"""Concept vectors on the real smollm2-135m: the checked-in file, scan, validation, Needle."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def concepts(smollm2):
    from mechunlearn.world.concepts import ConceptSet, concept_file

    return ConceptSet.load(concept_file("smollm2-135m"), model=smollm2)


def test_file_has_at_least_20_validated_concepts(concepts):
    from mechunlearn.locate.concept_vectors import ConceptFileConfig

    assert concepts.located and len(concepts) >= 20
    config = ConceptFileConfig()
    for c in concepts:
        assert len(c.questions) >= 4 and c.texts and c.unrelated, c.name
        assert config.passes(c.location.validation), c.name


def test_recorded_top_tokens_are_the_vectors_tokens(smollm2, concepts):
    from mechunlearn.locate.concept_vectors import top_token_ids, unembedding, vocabulary

    vocab = vocabulary(smollm2)
    for c in list(concepts)[:5]:
        loc = c.location
        v = smollm2.weight(loc.site).detach()[None] * loc.sign
        ids = top_token_ids(v, unembedding(smollm2), len(loc.top_tokens))[0].tolist()
        assert [vocab[i] for i in ids] == list(loc.top_tokens), c.name
        assert set(loc.reference_ids) & set(top_token_ids(v, unembedding(smollm2), 200)[0].tolist()), c.name


def test_scan_ranks_the_japan_vector_first(smollm2):
    from mechunlearn.locate.concept_vectors import ScanConfig, reference_ids, scan

    refs = {"Japan": reference_ids(smollm2, ["Japan", "Japanese", "Tokyo", "Osaka", "Kyoto", "Shinto", "samurai", "sushi"])}
    found = scan(smollm2, refs, ScanConfig(layers=(23, 28)), progress=False)
    best = found.selection("Japan", top=2)
    assert [str(s) for s in best.sites] == ["blocks.23.mlp.W_out[1508]", "blocks.28.mlp.W_out[258]"]
    assert " Japanese" in best[0].top_tokens[:3] and best[0].hits >= 6


def test_a_file_for_other_weights_is_refused(smollm2):
    from mechunlearn.core import WeightEdit
    from mechunlearn.world.concepts import ConceptFileMismatch, ConceptSet, concept_file

    with WeightEdit("blocks.0.mlp.W_out[0]", "zero").applied(smollm2):
        with pytest.raises(ConceptFileMismatch, match="force=True"):
            ConceptSet.load(concept_file("smollm2-135m"), model=smollm2)


def test_noise_validation_and_needle_on_one_concept(smollm2, concepts):
    from mechunlearn.locate.concept_vectors import NeedleConfig, ValidateConfig, needle, validate, validation_summary
    from mechunlearn.verify.behavior import behavior
    from mechunlearn.verify.traces import vector_traces

    concept = max(concepts, key=lambda c: c.location.validation["bleu_gap"])
    before = smollm2.weights_hash()
    summary = validation_summary(validate(smollm2, concept, concept.location.site, ValidateConfig())).iloc[0]
    for key in ("concept_bleu", "unrelated_bleu", "bleu_gap"):
        assert summary[key] == pytest.approx(concept.location.validation[key], abs=2e-3), key  # the file is reproducible
    assert summary["bleu_gap"] > 0.3

    target = concept.target()
    edit = needle(smollm2, concept, concept.location.site, NeedleConfig(steps=10))
    plain = behavior(smollm2, target, splits=("forget", "retain")).summary(("split", "metric"))["exact_match"]
    with edit.applied(smollm2):
        edited = behavior(smollm2, target, splits=("forget", "retain")).summary(("split", "metric"))["exact_match"]
    assert plain["forget"] - edited["forget"] > plain["retain"] - edited["retain"]
    traces = vector_traces(smollm2, [concept.location.site], edit).frame.set_index("metric")["value"]
    assert traces["cosine"] < 0.5 and traces["jaccard"] < 0.5
    assert smollm2.weights_hash() == before
