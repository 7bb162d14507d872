"""Where mechunlearn keeps built models and caches: ``$MECHUNLEARN_HOME`` (default ``~/.cache/mechunlearn``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The cache root; created on first use."""
    root = Path(os.environ.get("MECHUNLEARN_HOME") or Path.home() / ".cache" / "mechunlearn").expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root
