"""`ResultStore`: a study's one Parquet table, keyed by ``run_id`` (the hash of a run's config).

One process writes (the driver); every write replaces the file atomically (temp file, rename), so
a crash or Ctrl-C at any moment leaves the previous complete table. A run's rows replace any
earlier rows of the same ``run_id`` (a retried failure).
"""

from __future__ import annotations

import io
import json
import logging
from numbers import Number
from pathlib import Path

import pandas as pd

from mechunlearn.core.result import atomic_write_bytes

log = logging.getLogger(__name__)

RESULTS_FILE = "results.parquet"


def read_table(path: str | Path) -> pd.DataFrame:
    """The table in ``path``, read from one snapshot of its bytes. A running study replaces the
    file after every run, and pyarrow opens a path more than once (footer, then pages), so a read
    by path during a write can mix two versions ("Couldn't deserialize thrift")."""
    return pd.read_parquet(io.BytesIO(Path(path).read_bytes()))


class ResultStore:
    """The results table of one study folder."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / RESULTS_FILE
        self._frame = read_table(self.path) if self.path.exists() else pd.DataFrame()

    @property
    def frame(self) -> pd.DataFrame:
        """The whole table (a copy)."""
        return self._frame.copy()

    def finished(self) -> set[str]:
        """Keys of the runs that finished without error."""
        if self._frame.empty:
            return set()
        return set(self._frame.loc[self._frame["status"] == "ok", "run_id"])

    def failed(self) -> set[str]:
        """Keys of the runs whose last attempt failed."""
        if self._frame.empty:
            return set()
        return set(self._frame.loc[self._frame["status"] == "error", "run_id"])

    def add(self, rows: pd.DataFrame) -> None:
        """Add the rows of one or more runs, replacing earlier rows of the same runs, atomically."""
        if rows.empty:
            raise ValueError("no rows to add")
        if "run_id" not in rows.columns or rows["run_id"].isna().any():
            raise ValueError("every row needs a run_id")
        old = self._frame
        if not old.empty:
            old = old[~old["run_id"].isin(set(rows["run_id"]))]
        parts = [f for f in (old, rows) if not f.empty]
        table = normalise(pd.concat(parts, ignore_index=True))
        atomic_write_bytes(self.path, lambda tmp: table.to_parquet(tmp, index=False))
        self._frame = table


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Column types Parquet accepts for rows from many verifiers: ``value`` float, ``layer`` and
    ``seed`` nullable ints, numeric object columns as numbers, other mixed columns as text."""
    frame = frame.copy()
    frame["value"] = pd.to_numeric(frame["value"], errors="raise").astype("float64")
    for col in ("layer", "seed"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="raise").astype("Int64")
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        present = frame[col].dropna()
        if present.empty:
            frame[col] = frame[col].astype("string")
        elif all(isinstance(v, Number) and not isinstance(v, bool) for v in present):
            frame[col] = pd.to_numeric(frame[col])
        elif not all(isinstance(v, str) for v in present) and not all(isinstance(v, bool) for v in present):
            frame[col] = frame[col].map(_as_text, na_action="ignore").astype("string")
    return frame


def _as_text(value) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=str)
    return str(value)
