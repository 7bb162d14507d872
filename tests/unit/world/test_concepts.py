"""ConceptSet: records, JSON round trips, targets, model checks, and the hand-written smollm2 set."""

import json

import pytest

from mechunlearn.world.concept_defs import definitions, unrelated_for
from mechunlearn.world.concepts import SCHEMA, Concept, ConceptFileMismatch, ConceptLocation, ConceptSet
from mechunlearn.world.target import Item


def concept(name="Japan", located=True) -> Concept:
    loc = ConceptLocation(
        layer=23, index=1508, sign=-1, score=0.75, rank=1, top_tokens=(" Japanese", " Japan"),
        reference_tokens=(" Japan",), reference_ids=(3085,), validation={"concept_bleu": 0.3, "unrelated_bleu": 0.9},
    )
    return Concept(
        name=name,
        reference_words=("Japan", "Tokyo"),
        questions=(Item("The capital of Japan is", "Tokyo", subject=name, attribute="concept", template="concept"),),
        unrelated=(Item("The opposite of hot is", "cold", subject="generic", attribute="unrelated", template="unrelated"),),
        texts=("Japan is an island country.",),
        category="country",
        location=loc if located else None,
    )


def test_round_trip_through_json(tmp_path):
    original = ConceptSet("smollm2-135m", (concept(), concept("Tokyo", located=False)), weights_hash="ab" * 32, meta={"note": (1, 2)})
    path = original.save(tmp_path / "c.json")
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA and data["concepts"][0]["site"] == "blocks.23.mlp.W_out[1508]"
    with pytest.raises(ValueError, match="pass model="):
        ConceptSet.load(path)  # a location means nothing without the weights it was found in
    loaded = ConceptSet.load(path, check=False)
    assert loaded.concepts == original.concepts
    assert loaded.weights_hash == original.weights_hash and loaded.meta["note"] == [1, 2]
    assert loaded["Japan"].location.site.layer == 23 and not loaded.located
    assert loaded.subset(["Japan"]).located


def test_target_of_a_concept():
    target = ConceptSet("m", (concept(),)).target("Japan")
    assert target.name == "concept:Japan"
    assert [i.answer for i in target.forget] == ["Tokyo"] and [i.answer for i in target.retain] == ["cold"]
    assert target.forget_texts == ("Japan is an island country.",)
    assert target.meta["reference_words"] == ["Japan", "Tokyo"] and target.meta["site"] == "blocks.23.mlp.W_out[1508]"


def test_bad_records_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no questions"):
        Concept("x", ("x",), (), ())
    with pytest.raises(ValueError, match="no reference words"):
        Concept("x", (), (Item("a", "b"),), ())
    with pytest.raises(ValueError, match="unique"):
        ConceptSet("m", (concept(), concept()))
    with pytest.raises(ValueError, match="sign"):
        ConceptLocation(layer=1, index=2, sign=0)
    with pytest.raises(KeyError, match="no concept 'Rome'"):
        ConceptSet("m", (concept(),))["Rome"]
    record = concept().to_dict()
    del record["questions"]
    with pytest.raises(ValueError, match="'Japan' is missing the key 'questions'"):
        Concept.from_dict(record)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": "other/9", "model_id": "m", "concepts": []}))
    with pytest.raises(ValueError, match="schema"):
        ConceptSet.load(bad, check=False)
    with pytest.raises(FileNotFoundError):
        ConceptSet.load(tmp_path / "missing.json", check=False)


def test_model_check(tiny_model, tmp_path):
    good = ConceptSet(tiny_model.model_id, (concept(),), weights_hash=tiny_model.weights_hash())
    good.check_model(tiny_model)
    with pytest.raises(ConceptFileMismatch, match="made for model 'other'"):
        ConceptSet("other", (concept(),)).check_model(tiny_model)
    stale = ConceptSet(tiny_model.model_id, (concept(),), weights_hash="0" * 64)
    path = stale.save(tmp_path / "stale.json")
    with pytest.raises(ConceptFileMismatch, match="located in weights 000000000000"):
        ConceptSet.load(path, model=tiny_model)
    assert ConceptSet.load(path, model=tiny_model, force=True).names == ["Japan"]


def test_smollm2_definitions():
    concepts = definitions("smollm2-135m")
    assert concepts == definitions("smollm2-135m")  # deterministic
    assert len(concepts) >= 20 and not concepts.located
    categories = {c.category for c in concepts}
    assert {"country", "city", "person", "astronomy", "science", "work"} <= categories
    for c in concepts:
        assert len(c.questions) >= 4, c.name
        assert len(c.texts) >= 4 and len(c.unrelated) == 10, c.name
        mine = {w.lower() for w in c.reference_words}
        for item in c.unrelated:
            said = set(f"{item.prompt} {item.answer}".lower().replace(",", " ").replace(".", " ").split())
            assert not said & mine, (c.name, item.prompt)
            if item.subject != "generic":
                assert concepts[item.subject].category != c.category
    assert "Paris" not in {i.subject for i in concepts["France"].unrelated}
    with pytest.raises(KeyError, match="no hand-written concepts"):
        definitions("gpt-5")


def test_unrelated_for_rotates_generic_questions():
    raw = {
        "a": ("x", ["alpha"], [("q alpha", "alpha")], []),
        "b": ("y", ["beta"], [("q beta", "beta")], []),
        "c": ("x", ["gamma"], [("q gamma", "gamma")], []),
    }
    generic = [(f"g{i}", "v") for i in range(5)]
    items = unrelated_for("a", raw, generic, n_generic=2, n_other=3)
    assert [i.prompt for i in items] == ["g0", "g1", "q beta"]  # c shares a's category
    assert [i.prompt for i in unrelated_for("b", raw, generic, n_generic=2, n_other=1)] == ["g3", "g4", "q gamma"]


def test_world_concepts(world):
    from mechunlearn.world.concept_defs import world_concepts

    concepts = world_concepts(world)
    assert concepts == world_concepts(world)  # deterministic
    cities = {p["birth_city"] for p in world.people}
    assert {f"birth_city:{c}" for c in cities} <= set(concepts.names)
    for c in concepts:
        value = c.reference_words[0]
        assert c.questions and all(i.answer == value for i in c.questions)
        assert c.unrelated and all(value not in f"{i.prompt} {i.answer}" for i in c.unrelated)
        assert all(value in t for t in c.texts)
    assert concepts.model_id == "bios-tiny"
