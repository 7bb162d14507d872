"""Studies end to end: the smoke study on the small bios-tiny (the report in headless Chromium,
the CLI), a real Ctrl-C on a CLI run and a real SIGKILL of the driver in the middle of a write.
Ray on a two-node cluster: test_study_ray.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mechunlearn.study import load_results, load_study, run_study
from mechunlearn.study.browser import check_page
from mechunlearn.study.store import ResultStore, read_table
from tests.unit.study.plugin import write_study_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "studies" / "smoke.yaml"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """The smoke study run locally with one torch thread (what Ray workers use)."""
    folder = tmp_path_factory.mktemp("smoke-local")
    study = load_study(SMOKE)
    summary = run_study(study, folder, threads=1, progress=False)
    return study, folder, summary


def test_smoke_study_runs_every_method_and_measures_real_effects(smoke):
    study, folder, summary = smoke
    assert (summary.total, summary.ok, summary.failed) == (len(study.runs()), len(study.runs()), 0)
    results = load_results(folder)
    em = results[(results["metric"] == "exact_match") & (results["verifier"] == "behavior")]
    table = em.pivot_table(index="label", columns=["paraphrase", "split"], values="value")
    assert table.loc["none", ("trained", "forget")] > 0.9  # the original model knows the forget people
    assert table.loc["retain", ("trained", "forget")] < 0.5  # the retain model never saw them
    assert table.loc["ga", ("trained", "forget")] < table.loc["none", ("trained", "forget")] - 0.3
    assert set(table.index) == {r.label for r in study.runs()}
    timings = results[results["verifier"] == "runner"].pivot_table(index="label", columns="metric", values="value")
    assert (timings["seconds_edit"] > 0).all()


def test_report_renders_in_headless_chromium(smoke):
    _, folder, _ = smoke
    out = subprocess.run([sys.executable, "-m", "mechunlearn.cli", "study", "report", str(folder), "--check"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    check = check_page(folder / "index.html")
    # wall time, NPO's forget and retain exact match against its swept lr, trade-off on trained
    # and on held-out templates, exact match per split
    assert check.plots == 6 and check.rendered == 6
    assert check.js_errors == [] and check.external_requests == [] and check.figure_errors == 0
    html = (folder / "index.html").read_text()
    assert "Summary" in html and "smoke" in html and "eval_retain_people" in html


def test_cli_rerun_skips_finished_runs(smoke, tmp_path):
    study, folder, _ = smoke
    out = subprocess.run([sys.executable, "-m", "mechunlearn.cli", "study", "run", str(SMOKE), "--out", str(folder)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    n = len(study.runs())
    assert f"{n} runs: {n} already done, 0 finished, 0 failed" in out.stdout


def test_ctrl_c_on_the_cli_keeps_finished_runs_and_resume_completes(tmp_path):
    release = tmp_path / "release"
    study_file = write_study_file(tmp_path / "interrupt.yaml", ["none", {"name": "ga", "params": {"steps": 2, "stop_forget_em": None}}, {"name": "test-wait", "params": {"file": str(release)}}, {"name": "npo", "params": {"steps": 2}}])
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mechunlearn.cli", "study", "run", str(study_file), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A shell's background job (`make test &`) starts with SIGINT ignored and children inherit
    # that; the CLI should see Ctrl-C as a terminal would deliver it.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 300  # a guard against hanging, not a measurement
        while not (out.is_dir() and len(ResultStore(out, repair=False).finished()) == 2):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the first two runs never finished"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # the third run is waiting for `release`
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted: every finished run is saved" in stderr
    table = read_table(out)
    assert set(table["method"]) == {"none", "ga"} and (table["status"] == "ok").all()
    release.touch()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "4 runs: 2 already done, 2 finished, 0 failed" in again.stdout
    assert set(read_table(out)["method"]) == {"none", "ga", "test-wait", "npo"}


# The driver of a study, with the store's Parquet writer stopped half-way through the third run's
# file (it has written part of the temp file, says so, and waits to be killed).
KILLED_DRIVER = """
import pathlib, sys, time
import pyarrow.parquet as pq
from mechunlearn.cli import main
real, calls = pq.write_table, []
def write(table, where, **kw):
    calls.append(where)
    if len(calls) == 3:
        real(table.slice(0, 1), where, **kw)
        with open(where, "r+b") as fh:
            fh.truncate(100)  # half a file
        pathlib.Path(sys.argv[1]).touch()
        time.sleep(300)
    return real(table, where, **kw)
pq.write_table = write
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_of_the_driver_during_a_write_loses_nothing_finished(tmp_path):
    writing = tmp_path / "writing"
    study_file = write_study_file(tmp_path / "killed.yaml", ["none", {"name": "ga", "params": {"steps": 2, "stop_forget_em": None}}, {"name": "npo", "params": {"steps": 2}}, {"name": "simnpo", "params": {"steps": 2}}])
    out = tmp_path / "out"
    args = ["study", "run", str(study_file), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DRIVER, str(writing), *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # a guard against hanging, not a measurement
        while not writing.exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the third run's write never started"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    half = list((out / "results").glob(".*.tmp"))
    assert len(half) == 1 and half[0].stat().st_size == 100  # the half-written file is there, as a temp file
    # a reader sees the two finished runs, whole, and not the half-written one
    table = read_table(out)
    assert set(table["method"]) == {"none", "ga"} and (table["status"] == "ok").all()
    again = subprocess.run([sys.executable, "-m", "mechunlearn.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "4 runs: 2 already done, 2 finished, 0 failed" in again.stdout  # the killed run ran again
    assert list((out / "results").glob(".*.tmp")) == []
    assert set(read_table(out)["method"]) == {"none", "ga", "npo", "simnpo"}
