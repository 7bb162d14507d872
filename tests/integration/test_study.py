"""Studies end to end: the smoke study on the small bios-tiny (local and Ray executors, the
report in headless Chromium, the CLI), and a real Ctrl-C on a CLI run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from mechunlearn.study import load_results, load_study, run_study
from mechunlearn.study.browser import check_page
from mechunlearn.study.store import read_table

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "studies" / "smoke.yaml"
KEY = ["run_id", "verifier", "metric", "split", "paraphrase"]


def verifier_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Measurements only (no timings), in a fixed order."""
    rows = frame[(frame["verifier"] != "runner") & (frame["status"] == "ok")]
    return rows.sort_values(KEY).reset_index(drop=True)[[*KEY, "value"]]


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


def test_ray_with_two_local_workers_gives_the_local_results(smoke, tmp_path):
    study, folder, _ = smoke
    # two of the runs, one per worker: a reference and a training run (same run ids as locally)
    pair = replace(study, methods=tuple(m for m in study.methods if m.name in ("retain", "ga")))
    summary = run_study(pair, tmp_path, executor="ray", workers=2, progress=False)
    assert (summary.ok, summary.failed) == (2, 0)
    ids = {r.run_id for r in pair.runs()}
    local, ray = verifier_rows(load_results(folder)), verifier_rows(load_results(tmp_path))
    local = local[local["run_id"].isin(ids)].reset_index(drop=True)
    assert set(ray["run_id"]) == ids
    pd.testing.assert_frame_equal(ray[KEY], local[KEY])
    pd.testing.assert_series_equal(ray["value"], local["value"], rtol=1e-6, atol=1e-6)


def test_report_renders_in_headless_chromium(smoke):
    _, folder, _ = smoke
    out = subprocess.run([sys.executable, "-m", "mechunlearn.cli", "study", "report", str(folder), "--check"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    check = check_page(folder / "index.html")
    # wall time, trade-off on trained and on held-out templates, exact match per split
    assert check.plots == 4 and check.rendered == 4
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
    study_file = tmp_path / "interrupt.yaml"
    study_file.write_text(json.dumps({
        "name": "interrupt",
        "imports": ["tests.unit.study.plugin"],
        "models": ["study-tiny"],
        "targets": [{"source": "toy"}],
        "methods": ["none", {"name": "ga", "params": {"steps": 2, "stop_forget_em": None}}, {"name": "test-wait", "params": {"file": str(release)}}, {"name": "npo", "params": {"steps": 2}}],
        "verifiers": [{"name": "behavior", "params": {"splits": ["forget"], "by": []}}],
    }))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mechunlearn.cli", "study", "run", str(study_file), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A shell's background job (`make test &`) starts with SIGINT ignored and children inherit
    # that; the CLI should see Ctrl-C as a terminal would deliver it.
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
    try:
        deadline = time.monotonic() + 300  # a guard against hanging, not a measurement
        while not ((out / "results.parquet").exists() and read_table(out / "results.parquet")["run_id"].nunique() == 2):
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
    table = read_table(out / "results.parquet")
    assert set(table["method"]) == {"none", "ga"} and (table["status"] == "ok").all()
    release.touch()
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "4 runs: 2 already done, 2 finished, 0 failed" in again.stdout
    assert set(read_table(out / "results.parquet")["method"]) == {"none", "ga", "test-wait", "npo"}


def test_localized_methods_and_the_evaluation_card_in_a_study(tmp_path):
    """SalUn, SLUG, Needle, LUNAR and fact lookup as study methods on the small world, judged by the card: the card
    sees the original and the edit (not the edit twice), and GA's hidden knowledge shows."""
    from mechunlearn.study import study_from_dict

    quick = {"steps": 30, "lr": 3e-4, "stop_forget_em": 0.1, "stop_every": 5}
    study = study_from_dict({
        "name": "card",
        "models": [{"name": "bios-tiny", "recipe": "small"}],
        "targets": [{"source": "world", "forget_frac": 0.1, "eval_retain_people": 4}],
        "methods": ["none", {"name": "ga", "params": {**quick, "lr": 2e-4}}, {"name": "salun", "params": quick},
                    {"name": "slug", "params": {"max_candidates": 2, "forget_eval_items": 120}}, {"name": "needle", "params": {"steps": 5}},
                    {"name": "lunar", "params": {"retain_items": 64, "sweep_items": 32}},
                    {"name": "fact_lookup", "params": {"steps": 10}}],
        "verifiers": [{"name": "card", "params": {"sections": ["probes", "weights", "mia", "tofu"], "max_items": 100}}],
    })
    summary = run_study(study, tmp_path, progress=False)
    results = load_results(tmp_path)
    assert summary.failed == 0, results[results["status"] == "error"][["label", "error"]].to_string()
    card = results[results["verifier"] == "card"]
    assert set(card["section"].dropna()) == {"probes", "weights", "mia", "tofu"}
    assert set(card["role"].dropna()) == {"original", "edited", "retain"}
    assert set(card.loc[card["section"] != "probes", "role"].dropna()) == {"edited"}
    # the unedited run's weights did not move; GA's did
    rel = card[(card["metric"] == "rel_frobenius") & (card["weight"] == "all")].groupby("method")["value"].max()
    assert rel.get("none", 0.0) == 0.0 and rel["ga"] > 0
    # LUNAR changes exactly one W_out; fact lookup only MLP weights
    moved = card[(card["metric"] == "delta_frobenius") & (card["weight"] != "all") & (card["value"] > 0)]
    lunar = moved[moved["method"] == "lunar"]["weight_name"]
    assert lunar.str.endswith("mlp.W_out").all() and lunar.nunique() == 1
    assert moved[moved["method"] == "fact_lookup"]["weight_name"].str.contains(r"\.mlp\.").all()
    # SalUn's mask: 10% of the scored weights
    located = results[(results["verifier"] == "locate") & (results["metric"] == "selected_density")].set_index("method")["value"]
    assert located["salun"] == pytest.approx(0.1, abs=1e-3)
    # probes on the edited model still decode what GA no longer answers (EVALS.md finding 1)
    probes = card[(card["metric"] == "probe_acc") & (card["split"] == "forget") & (card["method"] == "ga")]
    assert probes[probes["role"] == "edited"]["value"].max() > probes[probes["role"] == "retain"]["value"].max() - 0.05


def test_feature_methods_in_a_study(tmp_path):
    """SAE clamping and CodeUnlearn (small dictionaries) as study methods on the small world."""
    from mechunlearn.study import study_from_dict

    sae = {"d_sae": 512, "k": 8, "steps": 300, "n_features": 16, "value": 30.0}
    codes = {"n_codes": 256, "k": 8, "steps": 300, "disable": 32}
    study = study_from_dict({
        "name": "features",
        "models": [{"name": "bios-tiny", "recipe": "small"}],
        "targets": [{"source": "world", "forget_frac": 0.1, "eval_retain_people": 8}],
        "methods": ["none", {"name": "sae_clamp", "params": sae}, {"name": "codeunlearn", "params": codes},
                    {"name": "codeunlearn", "label": "random codes", "params": {**codes, "random": True}}],
        "verifiers": [{"name": "behavior", "params": {"splits": ["forget", "retain"], "by": []}}],
    })
    summary = run_study(study, tmp_path, progress=False)
    results = load_results(tmp_path)
    assert summary.failed == 0, results[results["status"] == "error"][["label", "error"]].to_string()
    em = results[(results["metric"] == "exact_match")].pivot_table(index="label", columns="split", values="value")
    assert em.loc["sae_clamp", "forget"] < em.loc["none", "forget"] - 0.3
    # the forget-specific codes hurt the forget set more than as many random codes do
    chosen = em.loc["codeunlearn"]
    rand = em.loc["random codes"]
    assert (rand["forget"] - chosen["forget"]) > 0
