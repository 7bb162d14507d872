"""The runner on a tiny random model: one Parquet table keyed by run_id, resumable, failures
recorded while the others finish, Ctrl-C keeps what finished, leaks are caught."""

import json

import pandas as pd
import pytest

import tests.unit.study.plugin  # noqa: F401 - registers study-tiny, toy, test methods
from mechunlearn.study import load_results, run_study, study_from_dict
from mechunlearn.study.run import TIMING_METRICS
from mechunlearn.study.store import ResultStore, read_table

GA = {"name": "ga", "params": {"steps": 3, "lr": 1e-2, "stop_forget_em": None, "batch_size": 4}}
NPO = {"name": "npo", "params": {"steps": 3, "batch_size": 4}}


def make_study(methods, **changes):
    data = {
        "name": "unit",
        "models": ["study-tiny"],
        "targets": [{"source": "toy"}],
        "methods": methods,
        "verifiers": [{"name": "behavior", "params": {"splits": ["forget", "retain"], "by": []}}],
    }
    data.update(changes)
    return study_from_dict(data)


def test_results_are_one_parquet_file_per_run_keyed_by_config_hash(tmp_path):
    study = make_study(["none", GA], seeds=[0, 1])
    summary = run_study(study, tmp_path, progress=False)
    assert (summary.total, summary.skipped, summary.ok, summary.failed) == (4, 0, 4, 0)
    table = read_table(tmp_path)
    runs = {r.run_id: r for r in study.runs()}
    assert set(table["run_id"]) == set(runs)
    for run_id, rows in table.groupby("run_id"):
        run = runs[run_id]
        assert set(rows["method"]) == {run.method} and set(rows["seed"]) == {run.seed}
        assert json.loads(rows["params"].iloc[0]) == run.params
        assert (rows["status"] == "ok").all()
        assert set(rows.loc[rows["verifier"] == "runner", "metric"]) == set(TIMING_METRICS)
        behaviour = rows[rows["verifier"] == "behavior"]
        assert set(zip(behaviour["split"], behaviour["metric"])) >= {("forget", "exact_match"), ("retain", "answer_logprob")}
    # the edit really ran: GA lowers the forget answers' log-probability against the unedited model
    lp = table[(table["metric"] == "answer_logprob") & (table["split"] == "forget")].groupby("method")["value"].mean()
    assert lp["ga"] < lp["none"] - 0.1
    files = sorted((tmp_path / "results").glob("*.parquet"))
    assert len(files) == 4 and {f.name.split("-")[1] for f in files} == set(runs)
    assert list(tmp_path.glob("**/.*tmp")) == []
    record = json.loads((tmp_path / "study.json").read_text())
    assert sorted(record["run_ids"]) == sorted(runs) and record["provenance"]["config_hash"]


def test_rerun_skips_finished_runs_and_runs_only_new_ones(tmp_path):
    study = make_study(["none", GA])
    run_study(study, tmp_path, progress=False)
    before = read_table(tmp_path)
    again = run_study(study, tmp_path, progress=False)
    assert (again.skipped, again.ok, again.failed) == (2, 0, 0)
    pd.testing.assert_frame_equal(read_table(tmp_path), before)
    bigger = make_study(["none", GA], seeds=[0, 1])
    third = run_study(bigger, tmp_path, progress=False)
    assert (third.skipped, third.ok) == (2, 2)
    after = read_table(tmp_path)
    old_ids = set(before["run_id"])
    # finished runs were not redone: their rows (timings included) are untouched
    pd.testing.assert_frame_equal(
        after[after["run_id"].isin(old_ids)].reset_index(drop=True), before.reset_index(drop=True), check_dtype=False
    )


def test_failed_run_is_recorded_with_traceback_and_others_finish(tmp_path):
    # steps=0 is type-correct but the training loop refuses it at run time
    fixed = {k: v for k, v in GA["params"].items() if k != "steps"}
    study = make_study(["none", {"name": "ga", "params": fixed, "sweep": {"steps": [0, 3]}}, NPO])
    summary = run_study(study, tmp_path, progress=False)
    assert (summary.ok, summary.failed) == (3, 1)
    table = read_table(tmp_path)
    failed = table[table["status"] == "error"]
    assert len(failed) == 1 and failed["label"].iloc[0] == "ga steps=0"
    assert "steps must be >= 1" in failed["error"].iloc[0]
    assert "Traceback" in failed["traceback"].iloc[0] and "TrainConfig" in failed["traceback"].iloc[0]
    assert set(table.loc[table["status"] == "ok", "label"]) == {"none", "ga steps=3", "npo"}
    store = ResultStore(tmp_path)
    assert store.failed() == set(failed["run_id"])
    # a failed run is retried on the next call (and fails again, replacing its row, not adding one)
    again = run_study(study, tmp_path, progress=False)
    assert (again.skipped, again.failed) == (3, 1)
    assert (read_table(tmp_path)["status"] == "error").sum() == 1


def test_interrupt_loses_nothing_finished_and_resume_completes(tmp_path):
    flag = tmp_path / "interrupted-once"
    study = make_study(["none", GA, {"name": "test-interrupt", "params": {"flag": str(flag)}}, NPO])
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "out", progress=False)
    table = read_table(tmp_path / "out")
    assert set(table["method"]) == {"none", "ga"} and (table["status"] == "ok").all()
    summary = run_study(study, tmp_path / "out", progress=False)
    assert (summary.skipped, summary.ok, summary.failed) == (2, 2, 0)
    assert set(load_results(tmp_path / "out")["method"]) == {"none", "ga", "test-interrupt", "npo"}


def test_a_run_that_leaves_the_model_changed_fails_and_the_model_is_reloaded(tmp_path):
    study = make_study(["test-leak", "none"])
    summary = run_study(study, tmp_path, progress=False)
    assert (summary.ok, summary.failed) == (1, 1)
    table = read_table(tmp_path)
    assert "left the model changed (weights)" in table.loc[table["method"] == "test-leak", "error"].iloc[0]
    # the next run saw a pristine model: identical numbers to a fresh study of 'none' alone
    fresh = tmp_path / "fresh"
    run_study(make_study(["none"]), fresh, progress=False)
    pick = lambda t: t[(t["method"] == "none") & (t["verifier"] == "behavior")].sort_values(["split", "metric"])["value"].to_numpy()  # noqa: E731
    assert (pick(table) == pick(read_table(fresh))).all()


def test_localizer_step_feeds_its_mask_to_the_edit_and_is_recorded(tmp_path):
    params = {"steps": 3, "lr": 1e-2, "stop_forget_em": None, "batch_size": 4}
    study = make_study([{"name": "test-masked-ga", "params": params, "sweep": {"keep_ratio": [0.25, 0.5]}}, "none"])
    summary = run_study(study, tmp_path, progress=False)
    assert (summary.ok, summary.failed) == (3, 0)
    table = read_table(tmp_path)
    located = table[table["verifier"] == "locate"].pivot_table(index="label", columns="metric", values="value")
    n = 64 * 32  # blocks.0.mlp.W_in of the tiny model: d_model 32 x d_mlp 64
    assert located.loc["test-masked-ga keep_ratio=0.25", "selected_count"] == n // 4
    assert located.loc["test-masked-ga keep_ratio=0.5", "selected_density"] == pytest.approx(0.5)
    lp = table[(table["metric"] == "answer_logprob") & (table["split"] == "forget")].set_index("label")["value"]
    assert lp["test-masked-ga keep_ratio=0.5"] < lp["none"]
    times = table[table["verifier"] == "runner"].pivot_table(index="label", columns="metric", values="value")
    assert (times.loc[["test-masked-ga keep_ratio=0.25", "test-masked-ga keep_ratio=0.5"], "seconds_locate"] > 0).all()


def test_a_model_that_fails_to_load_fails_its_runs_once_each(tmp_path):
    study = study_from_dict({"name": "noload", "models": ["/no/such/model/dir"], "targets": [{"source": "toy"}], "methods": ["none", GA]})
    summary = run_study(study, tmp_path, progress=False)
    assert (summary.ok, summary.failed) == (0, 2)
    errors = read_table(tmp_path).set_index("method")["error"]
    assert "unknown model '/no/such/model/dir'" in errors["none"]
    assert "failed earlier in this worker" in errors["ga"]


def test_results_survive_a_failed_write(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    study = make_study(["none", GA])
    run_study(make_study(["none"]), tmp_path, progress=False)
    before = read_table(tmp_path)
    real_write = pq.write_table

    def broken(table, where, **kw):
        real_write(table.slice(0, 1), where, **kw)  # a partial file at the temp path
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        run_study(study, tmp_path, progress=False)
    pd.testing.assert_frame_equal(read_table(tmp_path), before)
    assert list(tmp_path.glob("**/.*tmp")) == []


def test_executor_options_are_checked(tmp_path):
    with pytest.raises(ValueError, match="workers must be >= 1"):
        run_study(make_study(["none"]), tmp_path, workers=0, progress=False)
    with pytest.raises(ValueError, match="use it with --executor ray"):
        run_study(make_study(["none"]), tmp_path, address="127.0.0.1:6379", progress=False)


def test_applies_edit_verifiers_get_the_unedited_model_and_the_edit(tmp_path):
    # the card compares edited with original weights itself, so the runner must not pre-apply the edit
    verifiers = [{"name": "test-sees-original"}, {"name": "test-sees-edited"}]
    study = make_study([GA], verifiers=verifiers)
    summary = run_study(study, tmp_path, progress=False)
    assert (summary.ok, summary.failed) == (1, 0)
    table = load_results(tmp_path).set_index(["verifier", "metric"])["value"]
    original = table[("test-sees-original", "hash_before")]
    edited = table[("test-sees-original", "hash_during")]
    assert original != edited
    # the other verifier is called with the edit applied (applying it again would change the hash twice)
    assert table[("test-sees-edited", "hash_before")] == edited


@pytest.mark.parametrize("method", ["salun", "wagle_graddiff", "wagle_npo"])
def test_masked_builtin_methods_train_only_their_mask(tmp_path, method):
    params = {"steps": 3, "lr": 1e-2, "stop_forget_em": None, "batch_size": 4, "keep_ratio": 0.05}
    if method.startswith("wagle"):
        params["retain_items"] = 8
    summary = run_study(make_study([{"name": method, "params": params}, "none"]), tmp_path, progress=False)
    assert (summary.ok, summary.failed) == (2, 0)
    table = load_results(tmp_path)
    located = table[(table["verifier"] == "locate") & (table["metric"] == "selected_density")]["value"]
    assert located.iloc[0] == pytest.approx(0.05, abs=1e-3)
    lp = table[(table["metric"] == "answer_logprob") & (table["split"] == "forget")].set_index("method")["value"]
    assert lp[method] < lp["none"]


def test_read_table_sees_whole_versions_while_a_writer_replaces_the_file(tmp_path):
    """A legacy study replaced results.parquet after every run; a reader polling such a file must
    get one complete version each time, never a mix of two."""
    import threading

    from mechunlearn.core.result import atomic_write_bytes
    from mechunlearn.study.store import read_table

    path = tmp_path / "results.parquet"
    sizes = [3000 + k for k in range(5)]

    def write(n: int) -> None:
        table = pd.DataFrame({"run_id": [f"r{j}" for j in range(n)], "value": [float(j) for j in range(n)]})
        atomic_write_bytes(path, lambda tmp: table.to_parquet(tmp, index=False))

    write(sizes[0])
    done = threading.Event()

    def writer() -> None:
        i = 0
        while not done.is_set():
            write(sizes[i % len(sizes)])
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = [read_table(path)["run_id"].nunique() for _ in range(300)]
    finally:
        done.set()
        thread.join()
    assert set(seen) <= set(sizes) and len(set(seen)) > 1  # whole versions, and the file did change
