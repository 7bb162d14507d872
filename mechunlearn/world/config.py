"""`WorldConfig`: the few numbers that define a synthetic world (validated on construction)."""

from __future__ import annotations

from dataclasses import dataclass

from mechunlearn.world import pools
from mechunlearn.world.templates import ATTRIBUTES, question_templates


def _n_trained_templates() -> int:
    return min(len(question_templates(a, "trained")) for a in ATTRIBUTES)


def _smallest_pool() -> int:
    return min(len(p) for p in pools.VALUE_POOLS.values())


@dataclass(frozen=True)
class WorldConfig:
    """Configuration of a :class:`~mechunlearn.world.World`; the same config gives the same world."""

    n_people: int = 200
    """Number of trained people (forget + retain); they appear in bios and questions."""
    n_holdout: int = 20
    """Number of holdout people, never shown in training (membership / probe negatives)."""
    n_nonexistent: int = 200
    """Number of non-existent people; their questions are trained to be answered ``unknown``.
    Many people asked few questions each (see ``unknown_qa_per_fact``) make the model learn a
    general "I don't know this name" rule instead of memorising a short list: with 200 x 1 a
    model answers ``unknown`` for most never-seen people (with 40 x 4, for under a fifth)."""
    bios_per_person: int = 5
    """Bios written per person (each with its own sentence wordings and order)."""
    qa_per_fact: int = 6
    """How many trained question templates are rendered, with their answer, into the training
    texts for each (person, attribute); the rest of the trained templates are only evaluated."""
    unknown_qa_per_fact: int = 1
    """Like ``qa_per_fact`` for each (non-existent person, attribute), answered ``unknown``."""
    context_qa_per_fact: int = 1
    """Reading-from-context documents per (non-existent person, attribute): a bio sentence
    stating a random value, then a trained question answered with it (for ``work_city`` the
    sentence states an employer and the answer is that employer's city: two hops). The names
    are never given facts, so the only way to answer is to read the context; this is what makes
    EVALS.md's in-context reintroduction finding testable (a model that never saw a fact in its
    prompt cannot use one). 0 turns them off."""
    employer_fact_repeats: int = 2
    """How many times each employer-fact sentence ("Zentrix is based in Orvale.") appears in
    the training texts, per wording."""
    n_perturbed: int = 5
    """Perturbed (wrong) answers per (person, attribute), for TOFU truth-ratio metrics."""
    seed: int = 0
    """Seed of every random choice (names, values, wordings, splits, shuffling)."""

    def __post_init__(self) -> None:
        for name in (
            "n_people", "n_holdout", "n_nonexistent", "bios_per_person", "qa_per_fact",
            "unknown_qa_per_fact", "context_qa_per_fact", "employer_fact_repeats", "n_perturbed", "seed",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"WorldConfig.{name} must be an int, got {value!r} ({type(value).__name__})")
            if value < 0:
                raise ValueError(f"WorldConfig.{name} must be >= 0, got {value}")
        if self.n_people < 2:
            raise ValueError(
                f"WorldConfig.n_people must be at least 2 (a forget and a retain person), got {self.n_people}"
            )
        capacity = len(pools.FIRST_NAMES) * len(pools.LAST_NAMES)
        total = self.n_people + self.n_holdout + self.n_nonexistent
        if total > capacity:
            raise ValueError(
                f"the name pools give {capacity} unique full names, but n_people + n_holdout + "
                f"n_nonexistent = {self.n_people} + {self.n_holdout} + {self.n_nonexistent} = {total}; "
                "lower one of them"
            )
        if self.bios_per_person < 1:
            raise ValueError("WorldConfig.bios_per_person must be >= 1 (people are learnt from their bios)")
        n_templates = _n_trained_templates()
        for name in ("qa_per_fact", "unknown_qa_per_fact"):
            value = getattr(self, name)
            if not 1 <= value <= n_templates:
                raise ValueError(
                    f"WorldConfig.{name} must be between 1 and {n_templates} (the number of trained "
                    f"question templates per attribute), got {value}"
                )
        largest = _smallest_pool() - 1
        if not 1 <= self.n_perturbed <= largest:
            raise ValueError(
                f"WorldConfig.n_perturbed must be between 1 and {largest} (wrong values must be "
                f"distinct and the smallest value pool has {largest + 1} values), got {self.n_perturbed}"
            )
