"""The ``world`` target source: what the edit trains on vs what the verifiers score."""

from types import SimpleNamespace

import pytest

from mechunlearn.models.bios_tiny import BiosTinyRecipe
from mechunlearn.study import TARGETS
from mechunlearn.study.spec import resolve_params

WORLD = BiosTinyRecipe().small().world


def build(**params):
    source = TARGETS.get("world")
    model = SimpleNamespace(meta={"world_config": WORLD}, model_id="stub")
    return source.build(model, resolve_params(source.params, params, "test"))


def test_edit_sees_trained_templates_verifiers_see_all_and_a_retain_sample():
    t = build(forget_frac=0.1, paraphrase="trained", eval_paraphrase="all", eval_retain_people=3)
    assert {i.paraphrase for i in t.edit.forget} == {"trained"}
    assert {i.paraphrase for i in t.verify.forget} == {"trained", "heldout"}
    assert {i.subject for i in t.edit.forget} == {i.subject for i in t.verify.forget}
    assert len({i.subject for i in t.verify.retain}) == 3
    assert len({i.subject for i in t.edit.retain}) == 36  # 40 people, 4 forgotten
    assert not {i.subject for i in t.verify.retain} & {i.subject for i in t.verify.forget}


def test_all_retain_people_by_default_and_bad_values_are_clear():
    t = build()
    assert {i.subject for i in t.verify.retain} == {i.subject for i in t.edit.retain}
    with pytest.raises(ValueError, match="eval_retain_people must be >= 0"):
        build(eval_retain_people=-1)
    with pytest.raises(ValueError, match="has no synthetic world"):
        TARGETS.get("world").build(SimpleNamespace(meta={}, model_id="smol"), TARGETS.get("world").params)
