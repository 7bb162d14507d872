"""Benchmark: a study's store grows with the study, not with its square.

2,000 synthetic runs of 9,000 rows each (about what the demo's evaluation card writes per run)
are added one by one to a fresh study folder, as the driver does. Measured in one process: the
time of one `ResultStore.add` near run 10 and near run 2,000 (median of 10 adds each; goal: within
1.5x), the growth of the driver's peak resident memory over all the adds (the store keeps an
index, never the rows), and reading one label's rows (filters pushed down to the files) against
reading the whole table (goal: at least 10x faster).

    python -m benchmarks.study_store [--quick]
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import main, peak_growth

ADD_GOAL = 1.5
"""Largest allowed ratio of the add time at the last run to the add time at run 10."""
READ_GOAL = 10.0
"""Smallest allowed speed-up of reading one label's rows over reading the whole table."""
ROWS = 9000
LABELS = 40


def synthetic_run(template: pd.DataFrame, i: int) -> pd.DataFrame:
    """Run ``i``'s rows: the template with this run's key, label and values."""
    label = i % LABELS
    rng = np.random.default_rng(i)
    return template.assign(
        run_id=f"{i:016x}", method=f"m{label % 8}", label=f"m{label % 8} lr={label}", params=f'{{"lr": {label}}}', seed=i // LABELS,
        value=rng.random(len(template)),
    )


def template_rows(n: int = ROWS) -> pd.DataFrame:
    """Rows shaped like the card's: verifiers, metrics, splits, layers, paraphrases."""
    idx = np.arange(n)
    return pd.DataFrame({
        "run_id": "", "study": "bench", "model": "bios-tiny", "target": "world:forget_frac=0.1,paraphrase=trained", "method": "",
        "label": "", "params": "", "seed": 0, "status": "ok",
        "verifier": np.where(idx % 10 == 0, "behavior", "card"), "metric": [f"metric_{k % 60}" for k in idx],
        "split": np.array(["forget", "retain", "holdout"])[idx % 3], "layer": pd.array(np.where(idx % 4 == 0, pd.NA, idx % 6), dtype="Int64"),
        "value": 0.0, "error": pd.NA, "traceback": pd.NA, "paraphrase": np.where(idx % 2 == 0, "trained", "heldout"),
    })


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(quick: bool = False, runs: int | None = None) -> dict:
    """Add ``runs`` synthetic runs (2,000; 200 quick) and time adds and reads."""
    from mechunlearn.study.store import ResultStore, read_table

    runs = runs or (200 if quick else 2000)
    template = template_rows()
    with tempfile.TemporaryDirectory(prefix="study-store-") as tmp:
        folder = Path(tmp)
        store = ResultStore(folder)
        times: list[float] = []
        frames = (synthetic_run(template, i) for i in range(runs))

        def add_all() -> None:
            for frame in frames:
                times.append(_timed(lambda frame=frame: store.add(frame)))

        _, peak = peak_growth(add_all)
        early, late = statistics.median(times[5:15]), statistics.median(times[-10:])
        size_mb = sum(p.stat().st_size for p in store.files()) / 2**20
        label = "m3 lr=11"
        filtered = []
        read_one = _timed(lambda: filtered.append(read_table(folder, filters=[("label", "==", label)])))
        read_all = _timed(lambda: filtered.append(len(read_table(folder))))
        one_rows, all_rows = len(filtered[0]), filtered[1]
    add_ratio, read_ratio = late / early, read_all / read_one
    rows = [
        {"benchmark": "study_store", "variant": "add near run 10", "runs_in_store": 10, "seconds": early},
        {"benchmark": "study_store", "variant": f"add near run {runs}", "runs_in_store": runs, "seconds": late},
        {"benchmark": "study_store", "variant": "read one label", "rows": one_rows, "seconds": read_one},
        {"benchmark": "study_store", "variant": "read the whole table", "rows": all_rows, "seconds": read_all},
    ]
    peak_mb = None if peak is None else peak / 2**20
    return {
        "name": "study_store",
        "claim": f"adding run {runs} to a study's store takes at most {ADD_GOAL:g}x the time of adding run 10, and one label's rows read "
        f"at least {READ_GOAL:g}x faster than the whole table ({runs} runs x {ROWS:,} rows)",
        "model": "synthetic card rows",
        "threads": 1,
        "rows": rows,
        "store_mb": size_mb,
        "driver_peak_growth_mb": peak_mb,
        "headline": {
            "what": f"ResultStore.add, {runs} runs x {ROWS:,} rows; read one of {LABELS} labels",
            "baseline": "add at run 10; reading the whole table",
            "ratio": f"add at run {runs}: {add_ratio:.2f}x run 10's (goal <= {ADD_GOAL:g}); filtered read {read_ratio:.0f}x faster (goal >= {READ_GOAL:g})",
            "peak memory": "not measured" if peak_mb is None else f"driver +{peak_mb:.0f} MB over {runs} adds",
        },
        "passed": add_ratio <= ADD_GOAL and read_ratio >= READ_GOAL,
    }


if __name__ == "__main__":
    main(run)
