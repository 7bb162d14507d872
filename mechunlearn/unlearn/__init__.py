"""Unlearning: the one training loop, its losses, and `unlearn` (which returns a weight Edit)."""

from mechunlearn.unlearn.losses import LOSSES, make_loss
from mechunlearn.unlearn.loop import TrainConfig, TrainLog, fit
from mechunlearn.unlearn.unlearner import UnlearnConfig, unlearn
from mechunlearn.unlearn.undo import UndoConfig, noised_copy, undo

__all__ = ["LOSSES", "TrainConfig", "TrainLog", "UnlearnConfig", "fit", "make_loss", "unlearn", "UndoConfig", "noised_copy", "undo"]
