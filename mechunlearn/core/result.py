"""`Result`: a long-format table of measurements plus the provenance that produced it."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

COLUMNS = ("run_id", "method", "metric", "split", "layer", "value", "seed")
"""Columns every result table has (extra columns such as ``item`` or ``attribute`` may follow)."""


def config_hash(config: Any) -> str:
    """Short stable hash of a config (dataclass, mapping or JSON-able value)."""
    if is_dataclass(config) and not isinstance(config, type):
        config = asdict(config)
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _git(*args: str, cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd or Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_hash() -> str | None:
    """The package checkout's git commit, or ``None`` outside a git checkout."""
    out = _git("rev-parse", "HEAD")
    return out.strip() or None if out is not None else None


def git_dirty(cwd: Path | None = None) -> bool | None:
    """Whether the checkout (of this package, or ``cwd``) has uncommitted changes to tracked
    files (``None`` outside git): a build from a modified tree is not the commit it names."""
    out = _git("status", "--porcelain", "--untracked-files=no", cwd=cwd)
    return None if out is None else bool(out.strip())


def provenance(model_id: str | None = None, config: Any = None, **extra: Any) -> dict[str, Any]:
    """Package version, git hash, model id, config hash and time, for results and artefacts."""
    from mechunlearn import __version__

    record = {
        "package": "mechunlearn",
        "version": __version__,
        "git": git_hash(),
        "git_dirty": git_dirty(),
        "model_id": model_id,
        "config_hash": config_hash(config) if config is not None else None,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return record


@dataclass
class Result:
    """A tidy measurement table (``frame``) with ``provenance``.

    ``frame`` has at least the columns of `COLUMNS`; ``layer`` and ``seed`` may be missing (NA).
    """

    frame: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [c for c in ("metric", "value") if c not in self.frame.columns]
        if missing:
            raise ValueError(f"a Result frame needs the columns {missing}")
        frame = self.frame.copy()
        for col in COLUMNS:
            if col not in frame.columns:
                frame[col] = pd.NA
        self.frame = frame[list(COLUMNS) + [c for c in frame.columns if c not in COLUMNS]]

    @staticmethod
    def concat(results: Iterable["Result"]) -> "Result":
        """Stack several results; provenance of the first, with all model ids listed."""
        results = list(results)
        if not results:
            raise ValueError("nothing to concatenate")
        prov = dict(results[0].provenance)
        prov["parts"] = [r.provenance for r in results[1:]]
        return Result(pd.concat([r.frame for r in results], ignore_index=True), prov)

    def summary(self, by: Iterable[str] = ("method", "split", "metric")) -> pd.DataFrame:
        """Mean value per group, metrics as columns: the small table a CLI prints."""
        by = list(by)
        table = self.frame.groupby(by, dropna=False)["value"].mean()
        return table.unstack("metric") if "metric" in by else table.to_frame()

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table atomically (temp file, then rename) with a JSON provenance sidecar."""
        path = Path(path)
        atomic_write_text(path, self.frame.to_csv(index=False))
        atomic_write_text(path.with_suffix(path.suffix + ".provenance.json"), json.dumps(self.provenance, indent=2, default=str))
        return path

    def __repr__(self) -> str:
        return f"Result({len(self.frame)} rows, metrics={sorted(self.frame['metric'].unique())[:8]})"

    def _repr_html_(self) -> str:
        return self.summary().to_html()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temp file in the same folder, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_dir(path: str | os.PathLike, writer) -> Path:
    """Call ``writer(tmp_folder)`` to fill a folder, then rename it into place at ``path``
    (replacing an older one); a failure leaves no partial folder behind."""
    import shutil

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        writer(tmp)
        tmp.chmod(0o755)  # mkdtemp makes 0700; saved folders are meant to be shared
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _fsync(path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, writer, *, fsync: bool = False) -> None:
    """Call ``writer(tmp_path)`` to produce a file, then move it to ``path`` atomically. With
    ``fsync`` the file's bytes and then the rename are flushed to disk before this returns, so
    that a power cut cannot leave ``path`` empty or half-written either."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer(Path(tmp))
        os.chmod(tmp, 0o644)
        if fsync:
            _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        if fsync:
            _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

