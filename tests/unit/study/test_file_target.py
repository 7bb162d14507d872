"""The ``file`` target source: study files name the user's data and its retain model (oracle)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechunlearn.study.builtins import file_target
from mechunlearn.study.registry import TARGETS
from mechunlearn.study.spec import StudyError, study_from_dict

DATA = Path(__file__).resolve().parents[2] / "data"


def study(*targets):
    return study_from_dict({"name": "t", "models": [{"name": "bios-tiny"}, {"name": "smollm2-135m"}], "targets": list(targets), "methods": ["none"], "verifiers": ["behavior"]})


def test_file_targets_are_crossed_with_their_models_only():
    s = study({"source": "file", "path": str(DATA / "tofu"), "oracle": "my_retain.gguf", "models": ["smollm2-135m"]}, {"source": "file", "path": str(DATA / "choice.jsonl")})
    assert [(r.model.name, r.target.params["path"].split("/")[-1]) for r in s.runs()] == [("bios-tiny", "choice.jsonl"), ("smollm2-135m", "tofu"), ("smollm2-135m", "choice.jsonl")]
    with pytest.raises(StudyError, match="unknown parameter 'oracel'"):
        study({"source": "file", "path": "x", "oracel": "y"})


def test_file_target_builds_edit_and_verify_targets():
    params = {**TARGETS.get("file").params, "path": str(DATA / "tofu")}
    built = file_target(None, params)
    assert all(i.paraphrase == "trained" for i in built.edit.forget)
    assert len(built.verify.forget) == 2 * len(built.edit.forget) and built.verify.meta["protocol"] == "tofu"
    with pytest.raises(ValueError, match="needs path"):
        file_target(None, TARGETS.get("file").params)
