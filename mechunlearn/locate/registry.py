"""`LOCALIZERS`: the one registry of localizers, keyed by name (duplicates are refused).

Each entry is a frozen config dataclass whose instances have ``locate(model, target)``, which
returns scores only (a `Selection` or a `MaskSelection`): no thresholds, no editing, no I/O.
Study files and the CLI build them through `mechunlearn.core.registry.from_dict`:

>>> from mechunlearn.core.registry import from_dict
>>> localizer = from_dict(LOCALIZERS, {"name": "wagle", "gamma": 1e-3, "keep_ratio": 0.5})
>>> scores = localizer.locate(model, target)            # MaskSelection of per-weight scores
>>> mask = localizer.select(scores)                     # top keep_ratio of them
"""

from __future__ import annotations

from mechunlearn.core.registry import Registry

LOCALIZERS: Registry[type] = Registry("localizer")
"""Localizer config classes by name (``salun``, ``wagle``, ``snip``, ``magnitude``, ``random``, ``slug`` …)."""

__all__ = ["LOCALIZERS"]
