"""`Item` and `Target` live in `mechunlearn.data.target` (the world is one producer of targets,
files are another); this module keeps the old import path working."""

from mechunlearn.data.target import SPLITS, Item, Target, seeded_subset

__all__ = ["SPLITS", "Item", "Target", "seeded_subset"]
