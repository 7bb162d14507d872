"""The local executor with worker processes: same table as one run at a time, outcomes as runs
finish, and a worker killed with SIGKILL mid-run is replaced and its run retried, then recorded
as failed (WorkerDied) when it kills every worker it runs on; the study goes on."""

import pandas as pd

import tests.unit.study.plugin  # noqa: F401 - registers study-tiny, toy, test methods
from mechunlearn.study import load_results, run_study
from mechunlearn.study.executors import RETRIES
from tests.unit.study.test_study_runner import GA, NPO
from tests.unit.study.test_study_runner import make_study as runner_study

KEY = ["run_id", "verifier", "metric", "split"]
PLUGIN = ["tests.unit.study.plugin"]  # worker processes are spawned: they import the test registrations through the study


def make_study(methods, **changes):
    return runner_study(methods, imports=PLUGIN, **changes)


def measurements(folder) -> pd.DataFrame:
    rows = load_results(folder)
    rows = rows[rows["verifier"] != "runner"]
    return rows.sort_values(KEY).reset_index(drop=True)[[*KEY, "value"]]


def test_two_worker_processes_give_the_table_of_one(tmp_path):
    study = make_study(["none", GA, NPO], seeds=[0, 1])
    one = run_study(study, tmp_path / "one", threads=1, progress=False)
    two = run_study(make_study(["none", GA, NPO], seeds=[0, 1], executor={"name": "local", "workers": 2}), tmp_path / "two", progress=False)
    assert (one.ok, two.ok, two.failed) == (6, 6, 0)
    a, b = measurements(tmp_path / "one"), measurements(tmp_path / "two")
    pd.testing.assert_frame_equal(a[KEY], b[KEY])
    pd.testing.assert_series_equal(a["value"], b["value"], rtol=1e-6, atol=1e-6)


def test_a_killed_worker_is_replaced_and_its_run_retried_then_failed_after_the_retries(tmp_path):
    flag = tmp_path / "killed-once"
    study = make_study(["none", {"name": "test-kill", "label": "kill-once", "params": {"flag": str(flag)}}, {"name": "test-kill", "label": "kill-always"}, GA])
    summary = run_study(study, tmp_path / "out", workers=2, progress=False)
    assert (summary.total, summary.ok, summary.failed) == (4, 3, 1)
    table = load_results(tmp_path / "out")
    status = table.groupby("label")["status"].first()
    assert status.to_dict() == {"none": "ok", "kill-once": "ok", "kill-always": "error", "ga": "ok"}
    assert flag.exists()  # the first attempt of kill-once really died
    error = table.loc[table["label"] == "kill-always", "error"].iloc[0]
    assert error.startswith("WorkerDied: worker process") and "killed by SIGKILL" in error
    assert f"attempt {RETRIES + 1} of {RETRIES + 1}" in error
