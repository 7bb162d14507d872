"""`run_study`: execute every unfinished run of a study and append each outcome to its table.

The driver alone writes the study folder; each finished run is written before the next outcome is
awaited, with Ctrl-C held back during the write, so an interrupted study loses nothing finished.
Re-running skips the runs already finished (by ``run_id``) and retries failed ones.

Study folder:

| file              | what                                                            |
| ----------------- | --------------------------------------------------------------- |
| ``results/``      | the long table, one Parquet file per finished run (`ResultStore`): one row per (run, verifier, metric, split, …) |
| ``study.yaml``    | the study file as given (its text)                              |
| ``study.json``    | the resolved study (defaults filled in) and the provenance      |
| ``index.html``    | the report (`mechunlearn.study.report.write_report`)            |
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

from mechunlearn.core.result import atomic_write_text, provenance
from mechunlearn.study.executors import make_executor
from mechunlearn.study.spec import Study
from mechunlearn.study.store import RESULTS_DIR, ResultStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudySummary:
    """What one `run_study` call did."""

    folder: Path
    """The study folder (results/, study.yaml, study.json)."""
    total: int
    """Runs in the study."""
    skipped: int
    """Runs already finished before this call."""
    ok: int
    """Runs finished by this call."""
    failed: int
    """Runs that failed in this call (recorded with their error)."""

    @property
    def results(self) -> Path:
        """The folder of the results table (one file per run; `mechunlearn.study.store.read_table` reads it)."""
        return self.folder / RESULTS_DIR


def run_study(
    study: Study,
    folder: str | Path,
    *,
    executor: str | None = None,
    workers: int | None = None,
    address: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> StudySummary:
    """Run the unfinished runs of ``study``, writing each outcome as it arrives to ``folder/results/``.

    ``executor``, ``workers``, ``address`` and ``threads`` override the study's ``executor:``
    (`mechunlearn.study.spec.ExecutorSpec`; by default one run at a time in this process)."""
    folder = Path(folder)
    store = ResultStore(folder)
    runs = study.runs()
    how = study.executor
    executor = executor if executor is not None else how.name
    workers = workers if workers is not None else how.workers
    address = address if address is not None else how.address
    threads = threads if threads is not None else how.threads
    _write_study(study, folder, [r.run_id for r in runs], executor=executor, workers=workers)
    done = store.finished()
    todo = [r for r in runs if r.run_id not in done]
    skipped = len(runs) - len(todo)
    if skipped:
        log.info("%d of %d runs already finished in %s; running the other %d", skipped, len(runs), folder, len(todo))
    ok = failed = 0
    if not todo:
        return StudySummary(folder, len(runs), skipped, 0, 0)
    pool = make_executor(executor, workers=workers, address=address, threads=threads, gpus_per_worker=1 if study.uses_cuda else 0)
    bar = tqdm(total=len(runs), initial=skipped, desc=f"study {study.name}", unit="run", disable=not progress)
    try:
        for outcome in pool.map(todo):
            with _interrupt_deferred():
                store.add(outcome.frame)
            if outcome.status == "ok":
                ok += 1
            else:
                failed += 1
            bar.update(1)
            bar.set_postfix(failed=failed, refresh=False)
    finally:
        bar.close()
        pool.close()
    return StudySummary(folder, len(runs), skipped, ok, failed)


def _write_study(study: Study, folder: Path, run_ids: list[str], **how) -> None:
    record = {"study": study.to_dict(), "provenance": provenance(None, study.to_dict(), **how), "run_ids": run_ids}
    if study.source:
        atomic_write_text(folder / "study.yaml", study.source)
    atomic_write_text(folder / "study.json", json.dumps(record, indent=2, default=str))


@contextmanager
def _interrupt_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block ends (so a finished run is written whole), then raise it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt
