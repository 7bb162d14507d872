"""The user's data: `Item`, `Target` and the file loaders.

>>> from mechunlearn.data import load_target, export_tofu
>>> target = load_target("tests/data/qa.jsonl")                  # a QA table with a split column
>>> target = load_target("tests/data/tofu")                      # TOFU's layout: forget / retain / holdout files
>>> export_tofu(World(config).target(0.1), "my_tofu")            # the built-in world, in TOFU's layout
"""

from mechunlearn.data.export import export_tofu
from mechunlearn.data.files import load_target, read_records
from mechunlearn.data.target import SPLITS, Item, RecordError, Target

__all__ = ["SPLITS", "Item", "RecordError", "Target", "export_tofu", "load_target", "read_records"]
