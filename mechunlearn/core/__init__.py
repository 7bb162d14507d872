"""The core vocabulary: `Site`, `Selection` / `MaskSelection`, `Edit` and `EditHandle`, `Result`."""

from mechunlearn.core.edit import Compose, DeltaEdit, Edit, EditHandle, HookEdit, WeightEdit
from mechunlearn.core.registry import Registry
from mechunlearn.core.result import Result, provenance
from mechunlearn.core.selection import MaskSelection, Selection, SiteScore
from mechunlearn.core.site import Site

__all__ = [
    "Compose",
    "DeltaEdit",
    "Edit",
    "EditHandle",
    "HookEdit",
    "MaskSelection",
    "Registry",
    "Result",
    "Selection",
    "Site",
    "SiteScore",
    "WeightEdit",
    "provenance",
]
