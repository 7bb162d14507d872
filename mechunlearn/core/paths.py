"""Where mechunlearn keeps built models and caches: ``$MECHUNLEARN_HOME`` (default ``~/.cache/mechunlearn``)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator


def home() -> Path:
    """The cache root; created on first use."""
    root = Path(os.environ.get("MECHUNLEARN_HOME") or Path.home() / ".cache" / "mechunlearn").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock file beside a cache folder (``fcntl.flock``; released on exit or crash):
    one process builds the folder, the others wait for it and then read it."""
    import fcntl

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{folder.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
