"""The core vocabulary: `Site`, `Selection` / `MaskSelection`, `Edit` and `EditHandle`, `Result`
(and its open-unlearning files: `write_tofu_logs`, `read_tofu_logs`)."""

from mechunlearn.core.edit import Compose, DeltaEdit, Edit, EditHandle, HookEdit, WeightEdit
from mechunlearn.core.openunlearning import card_table, read_tofu_logs, write_tofu_logs
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
    "card_table",
    "provenance",
    "read_tofu_logs",
    "write_tofu_logs",
]
