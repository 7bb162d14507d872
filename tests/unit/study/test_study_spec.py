"""Study files: validation errors name the bad key or value; sweeps expand to grids; run keys."""

from pathlib import Path

import pytest

import tests.unit.study.plugin  # noqa: F401 - registers study-tiny, toy, test methods
from mechunlearn.core.result import config_hash
from mechunlearn.study import METHODS, StudyError, load_study, study_from_dict

REPO = Path(__file__).resolve().parents[3]


def base(**changes):
    data = {
        "name": "t",
        "models": [{"name": "study-tiny"}],
        "targets": [{"source": "toy"}],
        "methods": ["none", {"name": "ga", "params": {"steps": 2}}],
    }
    data.update(changes)
    return data


def test_defaults_are_filled_in_and_bare_names_accepted():
    study = study_from_dict(base())
    assert study.verifiers[0].name == "behavior"
    assert study.verifiers[0].params == {"splits": ["forget", "retain", "holdout"], "by": ["paraphrase"], "batch_size": 64}
    assert study.seeds == (0,)
    runs = study.runs()
    assert [r.method for r in runs] == ["none", "ga"]
    ga = runs[1]
    assert ga.params["steps"] == 2 and ga.params["lr"] == METHODS.get("ga").params["lr"]
    assert runs[0].target.params == {"n_forget": 4}


def test_sweep_is_a_grid_crossed_with_seeds_and_labelled():
    study = study_from_dict(base(methods=[{"name": "npo", "sweep": {"lr": [1e-4, 1e-3], "beta": [0.1, 0.2, 0.5]}}], seeds=[0, 1]))
    runs = study.runs()
    assert len(runs) == 2 * 3 * 2
    assert {(r.params["lr"], r.params["beta"], r.seed) for r in runs} == {(lr, b, s) for lr in (1e-4, 1e-3) for b in (0.1, 0.2, 0.5) for s in (0, 1)}
    assert "npo lr=0.0001,beta=0.1" in {r.label for r in runs}
    assert len({r.run_id for r in runs}) == len(runs)


def test_run_id_is_the_hash_of_the_run_config_and_ignores_labels():
    a = study_from_dict(base(methods=[{"name": "ga", "params": {"steps": 2}}])).runs()[0]
    b = study_from_dict(base(name="other", methods=[{"name": "ga", "label": "renamed", "params": {"steps": 2}}])).runs()[0]
    c = study_from_dict(base(methods=[{"name": "ga", "params": {"steps": 3}}])).runs()[0]
    assert a.run_id == config_hash(a.config()) == b.run_id
    assert a.run_id != c.run_id
    # giving a default explicitly is the same run as leaving it out
    d = study_from_dict(base(methods=[{"name": "ga", "params": {"steps": 2, "lr": METHODS.get("ga").params["lr"]}}])).runs()[0]
    assert d.run_id == a.run_id


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"methods": [{"name": "ga", "params": {"stpes": 3}}]}, r"methods\[0\] \(ga\).params: unknown parameter 'stpes'; known parameters: .*steps"),
        ({"methods": [{"name": "gradient-ascent"}]}, r"methods\[0\].name: unknown method 'gradient-ascent'; registered: .*graddiff"),
        ({"methods": [{"name": "ga", "params": {"lr": "fast"}}]}, r"methods\[0\] \(ga\).params.lr: expected float like .*, got 'fast'"),
        ({"methods": [{"name": "ga", "sweep": {"lr": 0.1}}]}, r"sweep.lr: expected a non-empty list of values, got 0.1"),
        ({"methods": [{"name": "ga", "params": {"lr": 0.1}, "sweep": {"lr": [0.1, 0.2]}}]}, r"'lr' is both in params and in sweep"),
        ({"methods": [{"name": "ga", "sweep": {"lr": [0.1, 0.1]}}]}, r"sweep.lr: \[0.1, 0.1\] repeats a value"),
        ({"methods": [{"name": "ga", "params": {"steps": 2.5}}]}, r"params.steps: expected int"),
        ({"methods": ["ga", {"name": "ga", "params": {"steps": 2}}]}, r"\['ga'\] name more than one entry; give each entry a distinct 'label'"),
        ({"methods": ["ga", {"name": "ga", "label": "ga2"}]}, r"identical runs"),
        ({"methods": [{"name": "ga", "paramz": {}}]}, r"methods\[0\]: unknown key 'paramz'; allowed keys: name, label, params, sweep"),
        ({"targets": [{"source": "toy", "n_forgt": 2}]}, r"targets\[0\]: unknown parameter 'n_forgt'"),
        ({"targets": [{"source": "concepts"}]}, r"targets\[0\].source: unknown target source 'concepts'; known: .*world"),
        ({"verifiers": [{"name": "behaviour"}]}, r"verifiers\[0\].name: unknown verifier 'behaviour'; registered: behavior"),
        ({"verifiers": [{"name": "behavior", "params": {"splits": "forget", "agg": 1}}]}, r"unknown parameter 'agg'"),
        ({"seeds": [0, 0]}, r"seeds: \[0, 0\] repeats a seed"),
        ({"seeds": [-1]}, r"seeds\[0\]: -1 is not a non-negative integer"),
        ({"models": []}, r"models: must list at least one entry"),
        ({"models": [{"name": "smollm2-135m", "recipe": "small"}]}, r"models\[0\].recipe: only bios-tiny \(and its planted models\) has recipes"),
        ({"models": [{"name": "bios-tiny", "recipe": "tiny"}]}, r"models\[0\].recipe: 'tiny' is not one of default, small"),
        ({"name": "a b"}, r"name: 'a b' must be letters"),
        ({"imports": ["no_such_module_xyz"]}, r"imports\[0\]: cannot import 'no_such_module_xyz'"),
        ({"extra": 1}, r"the study: unknown key 'extra'"),
        ({"executor": {"name": "slurm"}}, r"executor.name: 'slurm' is not one of local, ray"),
        ({"executor": {"workers": 0}}, r"executor.workers: 0 is not a positive integer"),
        ({"executor": {"name": "local", "address": "h:6379"}}, r"executor.address: only the ray executor"),
        ({"executor": {"worker": 2}}, r"executor: unknown key 'worker'; allowed keys: name, workers, address, threads"),
    ],
)
def test_bad_input_names_the_key(changes, message):
    with pytest.raises(StudyError, match=message):
        study_from_dict(base(**changes))


def test_executor_key_is_read_and_is_not_part_of_run_ids():
    plain = study_from_dict(base())
    assert (plain.executor.name, plain.executor.workers) == ("local", 1)
    parallel = study_from_dict(base(executor={"name": "ray", "workers": 4, "address": "head:6379", "threads": 2}))
    assert (parallel.executor.name, parallel.executor.workers, parallel.executor.address, parallel.executor.threads) == ("ray", 4, "head:6379", 2)
    assert [r.run_id for r in parallel.runs()] == [r.run_id for r in plain.runs()]


def test_missing_keys_and_bad_yaml(tmp_path):
    with pytest.raises(StudyError, match="needs a 'targets' key"):
        study_from_dict({"name": "x", "models": ["bios-tiny"], "methods": ["ga"]})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(StudyError, match="bad.yaml: not valid YAML"):
        load_study(bad)
    with pytest.raises(StudyError, match="does not exist"):
        load_study(tmp_path / "missing.yaml")


def test_yaml_reads_exponents_as_floats(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\nmodels: [study-tiny]\ntargets: [{source: toy}]\nmethods:\n  - {name: ga, params: {lr: 1e-3}}\n")
    study = load_study(path)
    assert study.runs()[0].params["lr"] == 0.001
    assert study.source == path.read_text()


@pytest.mark.parametrize("name", ["smoke.yaml", "default.yaml"])
def test_shipped_study_files_validate(name):
    study = load_study(REPO / "studies" / name)
    assert study.runs()
    assert {"none", "ga", "npo"} <= {m.name for m in study.methods}


def test_the_planted_study_runs_every_plant_type_under_every_selection():
    from mechunlearn.locate.suite import SUITE
    from mechunlearn.models.planted import PLANT_TYPES

    study = load_study(REPO / "studies" / "planted.yaml")
    runs = study.runs()
    assert {f"bios-tiny-planted-{t}" for t in PLANT_TYPES} == {r.model.name for r in runs}
    selections = {r.params["selection"] for r in runs if r.method == "planted_graddiff"}
    assert selections == {"oracle", "random", *SUITE}
