"""The synthetic fictitious world: people, bios, questions, splits, and its word-level tokenizer.

>>> from mechunlearn.world import World, WorldConfig, build_tokenizer
>>> w = World(WorldConfig(seed=0))
>>> target = w.target(forget_frac=0.1)            # forget / retain / holdout items
>>> texts = w.training_texts()                     # what bios-tiny trains on
>>> tok = build_tokenizer(w)
"""

from mechunlearn.world.config import WorldConfig
from mechunlearn.world.target import SPLITS, Item, Target
from mechunlearn.world.templates import ANSWER_CUE, ATTRIBUTES, QuestionTemplate, question_templates
from mechunlearn.world.tokenizer import SPECIAL_TOKENS, build_tokenizer, split_words, world_vocabulary
from mechunlearn.world.world import Person, World

__all__ = [
    "ANSWER_CUE",
    "ATTRIBUTES",
    "Item",
    "Person",
    "QuestionTemplate",
    "SPECIAL_TOKENS",
    "SPLITS",
    "Target",
    "World",
    "WorldConfig",
    "build_tokenizer",
    "question_templates",
    "split_words",
    "world_vocabulary",
]
