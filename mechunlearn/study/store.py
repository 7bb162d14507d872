"""`ResultStore`: a study's results, one Parquet file per finished run, keyed by ``run_id`` (the
hash of a run's config).

The table is the folder ``DIR/results/``, read as one `pyarrow.dataset` with filters pushed down
(reading one method's rows does not load the others). One process writes (the driver); each
`ResultStore.add` writes one new file atomically (temp file, fsync, rename, fsync of the folder),
so a write costs the same at run 10 and at run 10,000, and a crash, SIGKILL or Ctrl-C at any
moment leaves only whole files. Files are named ``<seq>-<run_id>-<status>.parquet`` (one run) or
``<seq>-runs.parquet`` (several runs: `compact`, a migrated legacy table); every row carries its
file's ``_seq``, and a run's rows are those of the newest file holding it (a retried failure
supersedes the failed attempt; its old single-run file is then removed).

A study folder from before (one ``DIR/results.parquet``) is read as it is and moved into
``results/`` on the next write. `compact` merges the files into one, streaming (bounded memory).
"""

from __future__ import annotations

import io
import json
import logging
import re
from numbers import Number
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from mechunlearn.core.result import atomic_write_bytes

log = logging.getLogger(__name__)

RESULTS_DIR = "results"
"""The folder of per-run files inside a study folder."""
RESULTS_FILE = "results.parquet"
"""The one-table file of study folders written before ``results/`` (read, migrated on write)."""
SEQ = "_seq"
"""Column holding the sequence number of the file a row was written in (dropped when read)."""

_NAME = re.compile(r"^(\d{8})-(?:([0-9a-f]+)-(ok|error)|runs)\.parquet$")

Filters = Any
"""A pyarrow expression (``pyarrow.dataset.field("method") == "ga"``), pyarrow's list form
(``[("method", "==", "ga")]``), or None for every row."""


def read_table(path: str | Path, *, filters: Filters = None, columns: list[str] | None = None) -> pd.DataFrame:
    """The results in ``path``: a study folder (its ``results/`` files, or its legacy
    ``results.parquet``) or one Parquet file. ``filters`` (a pyarrow expression, or pyarrow's
    ``[(column, op, value), ...]`` form) are pushed down to the files, so only matching rows are
    read; ``columns`` limits the columns. A file is read from one snapshot of its bytes (a legacy
    table was replaced after every run; pyarrow opens a path more than once)."""
    path = Path(path)
    if path.is_dir() and path.name == RESULTS_DIR:
        path = path.parent
    if path.is_dir():
        return ResultStore(path, repair=False).read(filters=filters, columns=columns)
    table = pq.read_table(io.BytesIO(path.read_bytes()), filters=_expression(filters), columns=columns)
    return _to_pandas(table)


class ResultStore:
    """The results of one study folder (see the module docstring). Holds only an index (run →
    newest file and status), never the rows."""

    def __init__(self, folder: str | Path, *, repair: bool = True) -> None:
        self.folder = Path(folder)
        self.dir = self.folder / RESULTS_DIR
        self.legacy = self.folder / RESULTS_FILE
        if repair:
            self._repair()
        self._index: dict[str, tuple[int, str]] = {}
        self._files: dict[int, Path] = {}
        self._scan()

    # --------------------------------------------------------------- index

    def _repair(self) -> None:
        """Remove what a killed writer left: temp files, and a legacy table already migrated."""
        if self.dir.is_dir():
            for tmp in self.dir.glob(".*.tmp"):
                log.warning("removing %s, left by an interrupted write", tmp)
                tmp.unlink()
            if self.legacy.exists() and (self.dir / _file_name(0)).exists():
                self.legacy.unlink()

    def _scan(self) -> None:
        entries: list[tuple[int, str, str]] = []
        if self.legacy.exists() and not (self.dir / _file_name(0)).exists():
            entries += [(0, run_id, status) for run_id, status in _run_statuses(pq.read_table(io.BytesIO(self.legacy.read_bytes()), columns=["run_id", "status"]))]
        for path in sorted(self.dir.glob("*.parquet")) if self.dir.is_dir() else []:
            match = _NAME.match(path.name)
            if match is None:
                raise ValueError(f"{path} is not a results file of this store; move it out of {self.dir}")
            seq = int(match.group(1))
            self._files[seq] = path
            if match.group(2):
                entries.append((seq, match.group(2), match.group(3)))
            else:
                entries += [(seq, run_id, status) for run_id, status in _run_statuses(pq.read_table(path, columns=["run_id", "status"]))]
        for seq, run_id, status in sorted(entries):
            self._index[run_id] = (seq, status)

    def files(self) -> list[Path]:
        """The per-run files, oldest first (not a legacy ``results.parquet``)."""
        return [self._files[s] for s in sorted(self._files)]

    def runs(self) -> dict[str, str]:
        """Status (``ok`` / ``error``) of every run's newest attempt."""
        return {run_id: status for run_id, (_, status) in self._index.items()}

    def finished(self) -> set[str]:
        """Keys of the runs that finished without error."""
        return {r for r, (_, status) in self._index.items() if status == "ok"}

    def failed(self) -> set[str]:
        """Keys of the runs whose last attempt failed."""
        return {r for r, (_, status) in self._index.items() if status == "error"}

    # --------------------------------------------------------------- reading

    @property
    def frame(self) -> pd.DataFrame:
        """The whole table (read from disk; prefer `read` with filters for a large study)."""
        return self.read()

    def read(self, *, filters: Filters = None, columns: list[str] | None = None, runs: Iterable[str] | None = None) -> pd.DataFrame:
        """The newest rows of every run, filtered in the files (see `read_table`); with ``runs``,
        of those runs only, opening only the files that hold them (the index says which)."""
        seqs = sorted(self._files)
        if runs is not None:
            runs = list(runs)
            seqs = sorted({self._index[r][0] for r in runs if r in self._index})
            filters = and_filter(filters, [("run_id", "in", runs)])
        sources = [self._files[s] for s in seqs if s in self._files]
        legacy = self.legacy.exists() and 0 not in self._files and (runs is None or 0 in seqs)
        if not sources and not legacy:
            return pd.DataFrame()
        expr = _expression(filters)
        want = None if columns is None else list(dict.fromkeys([*columns, "run_id", SEQ]))
        tables = []
        if sources:
            schema = _unified_schema(pq.read_schema(p) for p in sources)
            scan_columns = None if want is None else [c for c in want if c in schema.names]
            tables.append(ds.dataset([str(p) for p in sources], schema=schema, format="parquet").to_table(filter=expr, columns=scan_columns))
        if legacy:
            old = pq.read_table(io.BytesIO(self.legacy.read_bytes()), filters=expr)
            old = old.append_column(SEQ, pa.array([0] * len(old), pa.int64()))
            tables.append(old.select([c for c in want if c in old.schema.names]) if want else old)
        table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
        frame = _to_pandas(table)
        if frame.empty:
            return frame.drop(columns=[SEQ], errors="ignore")
        newest = frame["run_id"].map({r: seq for r, (seq, _) in self._index.items()})
        frame = frame[frame[SEQ].to_numpy() == newest.to_numpy()].drop(columns=[SEQ])
        return frame.reset_index(drop=True) if columns is None else frame[[c for c in columns if c in frame.columns]].reset_index(drop=True)

    # --------------------------------------------------------------- writing

    def add(self, rows: pd.DataFrame) -> Path:
        """Write the rows of one or more runs as a new file (atomically); they supersede earlier
        rows of the same runs. Returns the file written."""
        if rows.empty:
            raise ValueError("no rows to add")
        for col in ("run_id", "status"):
            if col not in rows.columns or rows[col].isna().any():
                raise ValueError(f"every row needs a {col}")
        runs = _run_statuses(pa.table({"run_id": rows["run_id"].astype(str).to_numpy(), "status": rows["status"].astype(str).to_numpy()}))
        if self.legacy.exists():
            self._migrate()
        seq = self._next_seq()
        name = _file_name(seq, *runs[0]) if len(runs) == 1 else _file_name(seq)
        table = pa.Table.from_pandas(_droppable_nulls(normalise(rows)), preserve_index=False)
        table = table.append_column(SEQ, pa.array([seq] * len(table), pa.int64()))
        path = self.dir / name
        atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp), fsync=True)
        self._files[seq] = path
        for run_id, status in runs:
            previous = self._index.get(run_id)
            self._index[run_id] = (seq, status)
            if previous is not None and previous[0] in self._files and _NAME.match(self._files[previous[0]].name).group(2):
                self._files.pop(previous[0]).unlink()  # a single-run file whose only run is superseded
        return path

    def _next_seq(self) -> int:
        return max(self._files, default=0) + 1

    def _migrate(self) -> None:
        """Move a legacy ``results.parquet`` into ``results/`` (as file 0), then remove it."""
        path = self.dir / _file_name(0)
        if not path.exists():
            table = pq.read_table(io.BytesIO(self.legacy.read_bytes()))
            table = table.replace_schema_metadata(None).append_column(SEQ, pa.array([0] * len(table), pa.int64()))
            atomic_write_bytes(path, lambda tmp: pq.write_table(table, tmp), fsync=True)
            log.info("moved %s into %s", self.legacy, path)
        self._files[0] = path
        self.legacy.unlink()

    def compact(self) -> Path | None:
        """Merge every file into one (newest rows of each run only), written atomically before the
        old files are removed (a crash in between leaves duplicates that reading resolves).
        Streams file by file. Returns the new file, or None when there was nothing to merge."""
        if self.legacy.exists():
            self._migrate()
        sources = self.files()
        if len(sources) < 2:
            return None
        schema = _unified_schema(pq.read_schema(p) for p in sources)
        seq = self._next_seq()
        live = {seq_: set() for seq_ in self._files}
        for run_id, (seq_, _) in self._index.items():
            live[seq_].add(run_id)

        def write(tmp: Path) -> None:
            with pq.ParquetWriter(tmp, schema) as writer:
                for path in sources:
                    old_seq = next(s for s, p in self._files.items() if p == path)
                    if not live[old_seq]:
                        continue
                    part = ds.dataset(str(path), schema=schema, format="parquet").to_table(filter=ds.field("run_id").isin(sorted(live[old_seq])))
                    part = part.set_column(part.schema.get_field_index(SEQ), SEQ, pa.array([seq] * len(part), pa.int64()))
                    writer.write_table(part)

        path = self.dir / _file_name(seq)
        atomic_write_bytes(path, write, fsync=True)
        for old in sources:
            old.unlink()
        self._files = {seq: path}
        self._index = {run_id: (seq, status) for run_id, (_, status) in self._index.items()}
        return path


def _file_name(seq: int, run_id: str | None = None, status: str | None = None) -> str:
    return f"{seq:08d}-{run_id}-{status}.parquet" if run_id else f"{seq:08d}-runs.parquet"


def _run_statuses(table: pa.Table) -> list[tuple[str, str]]:
    """(run_id, status) of each run in ``table``, in first-seen order; a run needs one status."""
    pairs = dict.fromkeys(zip(table.column("run_id").to_pylist(), table.column("status").to_pylist()))
    runs: dict[str, str] = {}
    for run_id, status in pairs:
        if status not in ("ok", "error"):
            raise ValueError(f"run {run_id}: status must be 'ok' or 'error', got {status!r}")
        if runs.setdefault(run_id, status) != status:
            raise ValueError(f"run {run_id} has rows with both statuses; add each attempt on its own")
    return list(runs.items())


def and_filter(filters: Filters, more: Filters) -> Filters:
    """Both filters (either may be None)."""
    a, b = _expression(filters), _expression(more)
    return b if a is None else a if b is None else a & b


def _expression(filters: Filters):
    if filters is None or isinstance(filters, pc.Expression):
        return filters
    return pq.filters_to_expression(filters)


def _unified_schema(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema for files from many verifiers: a column missing from a file reads as nulls,
    integers widen to floats where other files hold floats, and a column that is text in some
    files and numbers in others is read as text (like `normalise` does for one table)."""
    fields: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for f in schema:
            fields.setdefault(f.name, []).append(f.type)
    out = []
    for name, types in fields.items():
        distinct = [t for t in dict.fromkeys(types) if t != pa.null()]
        try:
            kind = pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in distinct], promote_options="permissive").field(name).type if distinct else pa.null()
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            kind = pa.string()
        out.append(pa.field(name, kind))
    return pa.schema(out)


def _integer_dtype(kind: pa.DataType) -> Any:
    return pd.Int64Dtype() if pa.types.is_integer(kind) else None


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    """Columns as the study tables use them: nullable integers, text as Python strings."""
    return table.replace_schema_metadata(None).to_pandas(types_mapper=_integer_dtype)


def _droppable_nulls(frame: pd.DataFrame) -> pd.DataFrame:
    """Drop the verifier columns that are empty in this run (reading fills them as nulls), so their
    type cannot clash with the same column's type in other runs' files."""
    keep = {"run_id", "study", "model", "target", "method", "label", "params", "seed", "status", "worker", "verifier", "metric", "split", "layer", "value", "error", "traceback"}
    empty = [c for c in frame.columns if c not in keep and frame[c].isna().all()]
    return frame.drop(columns=empty)


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
