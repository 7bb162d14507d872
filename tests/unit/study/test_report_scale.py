"""A study report stays quick and readable at sweep scale: it reads only the rows its tables need,
its per-verifier figures draw a capped number of runs, and its summary says what each row is."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mechunlearn.figures import study as study_figures
from mechunlearn.study import report
from mechunlearn.study.store import ResultStore


def run_rows(i: int, label: str, method: str, *, probe: float = 0.5) -> pd.DataFrame:
    base = {"run_id": f"a{i:03d}", "model": "m", "target": "t", "method": method, "label": label, "params": "{}", "seed": i, "status": "ok"}
    rows = [
        {**base, "verifier": "behavior", "metric": "exact_match", "split": "forget", "paraphrase": "trained", "value": 0.1 * i},
        {**base, "verifier": "runner", "metric": "seconds_total", "value": 2.0},
        {**base, "verifier": "runner", "metric": "seconds_edit", "value": 1.0},
        {**base, "verifier": "card", "section": "probes", "role": "edited", "metric": "probe_acc", "split": "forget", "reading": "refit",
         "position": "subject", "attribute": "city", "layer": 0, "value": probe},
    ]
    # per-item rows, most of a real card's table, which no report table reads
    rows += [{**base, "verifier": "card", "section": "tofu", "role": "edited", "metric": "tofu_item", "of": "forget_Q_A_Prob", "item": k, "value": 0.5} for k in range(50)]
    return pd.DataFrame(rows)


def study_folder(tmp_path, n_runs: int, labels=("ga lr=1", "ga lr=2", "npo lr=1")):
    store = ResultStore(tmp_path)
    for i in range(n_runs):
        label = labels[i % len(labels)]
        store.add(run_rows(i, label, label.split()[0]))
    store.add(pd.DataFrame([{"run_id": "bad", "model": "m", "target": "t", "method": "ga", "label": "ga lr=3", "params": "{}", "seed": 0,
                             "status": "error", "value": float("nan"), "error": "ValueError: boom", "traceback": "tb"}]))
    study = {"name": "s", "methods": [], "verifiers": [{"name": "behavior", "params": {}}, {"name": "card", "params": {}}]}
    record = {"study": study, "run_ids": [f"a{i:03d}" for i in range(n_runs)] + ["bad"]}
    (tmp_path / "study.json").write_text(json.dumps(record))
    return tmp_path


def test_report_rows_leave_out_the_rows_no_table_reads_and_keep_failures(tmp_path):
    folder = study_folder(tmp_path, 6)
    rows = report.report_rows(folder)
    everything = report.load_results(folder)
    assert (everything["metric"] == "tofu_item").sum() == 300 and "tofu_item" not in set(rows["metric"].dropna())
    assert set(rows["metric"].dropna()) == {"exact_match", "seconds_total", "seconds_edit", "probe_acc"}
    assert rows.loc[rows["status"] == "error", "error"].tolist() == ["ValueError: boom"]
    # the tables read from these rows are the ones read from the whole table
    pd.testing.assert_frame_equal(report.summary_table(rows), report.summary_table(everything))


def test_summary_names_the_method_and_counts_the_runs_behind_each_row(tmp_path):
    table = report.summary_table(report.report_rows(study_folder(tmp_path, 7)))
    assert list(table.columns[:2]) == ["method", "runs"]
    assert table["runs"].to_dict() == {("m", "t", "ga lr=1"): 3, ("m", "t", "ga lr=2"): 2, ("m", "t", "npo lr=1"): 2}
    assert table.loc[("m", "t", "npo lr=1"), "method"] == "npo"
    assert table.loc[("m", "t", "ga lr=1"), "exact_match · forget · trained"] == "0.300 ± 0.300"  # runs 0, 3, 6


def test_run_times_draw_one_bar_per_method_past_max_bars(monkeypatch):
    frames = [run_rows(i, f"ga lr={i}" if i % 2 else f"npo lr={i}", "ga" if i % 2 else "npo") for i in range(6)]
    frame = pd.concat(frames, ignore_index=True)
    assert list(study_figures.run_times(frame).data[0].x) == [f"{'ga' if i % 2 else 'npo'} lr={i}" for i in range(6)]
    monkeypatch.setattr(study_figures, "MAX_BARS", 4)
    fig = study_figures.run_times(frame)
    assert list(fig.data[0].x) == ["npo", "ga"] and "mean per method (6 labels)" in fig.layout.title.text


def test_verifier_figures_draw_the_first_figure_runs_and_say_so(tmp_path, monkeypatch):
    folder = study_folder(tmp_path, 5)
    seen = []
    real = report.load_results
    monkeypatch.setattr(report, "load_results", lambda *a, **k: seen.append(k) or real(*a, **k))
    monkeypatch.setattr(report, "FIGURE_RUNS", 2)
    page = report.write_report(folder).read_text()
    assert "(the first 2 of 5 runs)" in page
    figure_reads = [k for k in seen if isinstance(k.get("filters"), list) and ("verifier", "==", "card") in k["filters"]]
    assert figure_reads and all(k["runs"] == ["a000", "a001"] for k in figure_reads)
