"""Benchmark: the report of a 2,000-run study is written in at most 30 s.

A study folder of 2,000 synthetic runs (667 method labels × 3 seeds, the last two labels the
``none`` and ``retain`` references) of about 9,000 rows each, shaped like the demo's: behaviour's
exact match, the runner's seconds, the card's headline and summary metrics (probes per layer,
attribute, position and role; attacks; relearning curves) and, for most of its rows, per-item
scores (``tofu_item``, ``mia_score``) that no report table reads. Measured in one process:
`write_report` (verdicts, summary, figures; per-verifier figures capped at `FIGURE_RUNS` runs)
against the naive baseline of reading the whole table (`read_table`), with the peak memory each
adds to the process.

    python -m benchmarks.study_report [--quick]
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import main, peak_growth

GOAL_SECONDS = 30.0
"""Longest allowed `write_report` of the 2,000-run study."""
ROWS = 9000
SEEDS = 3
ATTRIBUTES = ("birth_city", "employer", "work_city", "university", "field", "birth_year")


def template_rows(n: int = ROWS) -> pd.DataFrame:
    """One run's rows: the few the report reads, then per-item rows up to ``n``."""
    rows = [{"verifier": "behavior", "metric": "exact_match", "split": s, "paraphrase": p} for s in ("forget", "retain") for p in ("trained", "heldout")]
    rows += [{"verifier": "runner", "metric": m} for m in ("seconds_locate", "seconds_edit", "seconds_verify", "seconds_total")]
    card = {"verifier": "card"}
    rows += [{**card, "section": "tofu", "role": "edited", "metric": m, "split": s} for m, s in (("forget_quality", "forget"), ("forget_truth_ratio", "forget"), ("retain_utility", "retain"))]
    rows += [{**card, "section": "mia", "role": "edited", "metric": m, "split": "forget_vs_holdout"} for m in ("privleak", "mia_min_k")]
    rows += [{**card, "section": "probes", "role": role, "metric": "probe_acc", "split": split, "reading": reading, "position": pos, "attribute": a, "layer": layer}
             for role in ("edited", "original", "retain") for split in ("forget", "retain") for reading in ("refit", "frozen")
             for pos in ("question", "subject") for a in ATTRIBUTES for layer in range(4)]
    rows += [{**card, "section": "attacks", "role": "edited", "metric": "attack_exact_match", "attack": a, "split": "forget"} for a in ("paraphrase", "few_shot", "reintroduction")]
    rows += [{**card, "section": "attacks", "role": "edited", "metric": "relearn_exact_match", "split": "forget", "half": h, "step": k} for h in ("other", "trained") for k in (0, 5, 10)]
    rest = n - len(rows)
    rows += [{**card, "section": "tofu" if k % 2 else "mia", "role": "edited", "metric": "tofu_item" if k % 2 else "mia_score", "split": "forget", "item": k} for k in range(rest)]
    frame = pd.DataFrame(rows)
    frame["layer"] = frame["layer"].astype("Int64")
    frame["step"] = frame["step"].astype("Int64")
    frame["item"] = frame["item"].astype("Int64")
    return frame.assign(study="bench", model="bios-tiny", target="world:forget_frac=0.1,paraphrase=trained", status="ok", value=0.0)


def labels(runs: int) -> list[tuple[str, str]]:
    """(method, label) of each run: swept labels, then the two references; ``SEEDS`` runs each."""
    n = -(-runs // SEEDS)
    methods = ("ga", "npo", "graddiff", "salun", "wagle_npo", "wagle_graddiff", "rmu", "simnpo")
    swept = [(methods[i % len(methods)], f"{methods[i % len(methods)]} lr={i // len(methods)}") for i in range(n - 2)]
    return [*swept, ("none", "none"), ("retain", "retain")]


def synthetic_run(template: pd.DataFrame, i: int, method: str, label: str) -> pd.DataFrame:
    rng = np.random.default_rng(i)
    return template.assign(run_id=f"{i:016x}", method=method, label=label, params=json.dumps({"lr": label}), seed=i % SEEDS, value=rng.random(len(template)))


def write_study(folder: Path, runs: int) -> None:
    """A study folder of ``runs`` synthetic runs with its study.json."""
    from mechunlearn.study.store import ResultStore

    store = ResultStore(folder)
    template = template_rows()
    pairs = labels(runs)
    ids = []
    for i in range(runs):
        method, label = pairs[i // SEEDS]
        store.add(synthetic_run(template, i, method, label))
        ids.append(f"{i:016x}")
    study = {"name": "bench", "methods": [], "verifiers": [{"name": "behavior", "params": {}}, {"name": "card", "params": {}}]}
    (folder / "study.json").write_text(json.dumps({"study": study, "run_ids": ids}))


def run(quick: bool = False, runs: int | None = None) -> dict:
    """Write a ``runs``-run study (2,000; 200 quick), time its report and a whole-table read."""
    from mechunlearn.study.report import FIGURE_RUNS, write_report
    from mechunlearn.study.store import read_table

    runs = runs or (200 if quick else 2000)
    with tempfile.TemporaryDirectory(prefix="study-report-") as tmp:
        folder = Path(tmp)
        write_study(folder, runs)
        start = time.perf_counter()
        page, report_peak = peak_growth(lambda: write_report(folder))
        report_s = time.perf_counter() - start
        page_mb = page.stat().st_size / 2**20
        start = time.perf_counter()
        n_rows, read_peak = peak_growth(lambda: len(read_table(folder)))
        read_s = time.perf_counter() - start
    mb = lambda b: None if b is None else b / 2**20  # noqa: E731
    rows = [
        {"benchmark": "study_report", "variant": "write_report", "runs": runs, "seconds": report_s, "peak_growth_mb": mb(report_peak), "page_mb": page_mb},
        {"benchmark": "study_report", "variant": "read_table (whole table, naive)", "runs": runs, "rows": n_rows, "seconds": read_s, "peak_growth_mb": mb(read_peak)},
    ]
    memory = "not measured" if report_peak is None or read_peak is None else f"report +{mb(report_peak):.0f} MB vs whole-table read +{mb(read_peak):.0f} MB"
    return {
        "name": "study_report",
        "claim": f"the report of a {runs}-run study ({runs} x {ROWS:,} rows) is written in at most {GOAL_SECONDS:g} s, reading only the rows its tables need",
        "model": "synthetic card rows",
        "threads": 1,
        "rows": rows,
        "headline": {
            "what": f"write_report of {runs} runs x {ROWS:,} rows (figures of each verifier capped at {FIGURE_RUNS} runs)",
            "baseline": "reading the whole table (read_table), which the report did before",
            "ratio": f"report {report_s:.1f} s (goal <= {GOAL_SECONDS:g} s); whole-table read alone {read_s:.1f} s ({read_s / report_s:.1f}x the report)",
            "peak memory": memory,
        },
        "passed": report_s <= GOAL_SECONDS,
    }


if __name__ == "__main__":
    main(run)
