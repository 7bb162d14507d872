"""`Item` and `Target`: what to forget and what to keep. Data only, no model, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

SPLITS = ("forget", "retain", "holdout")


@dataclass(frozen=True)
class Item:
    """One question (or completion prompt) with its short answer.

    The model is scored on producing ``answer`` right after ``prompt`` (the answer text is
    appended after a single space, so tokenizers that split on whitespace see it as words).
    """

    prompt: str
    """The question or completion prompt, without the answer."""
    answer: str
    """The expected short answer (one or a few words)."""
    subject: str = ""
    """Who or what the item is about: a person's name or a concept's name."""
    attribute: str = ""
    """Which fact is asked for (``birth_city``, ``employer`` …), or ``""`` for free prompts."""
    template: str = ""
    """Identifier of the question template the prompt was rendered from."""
    paraphrase: str = "trained"
    """``trained`` when the template was seen in training, ``heldout`` when it never was."""


@dataclass(frozen=True)
class Target:
    """What to forget and what to keep: forget / retain / holdout items and texts.

    ``holdout`` items are about subjects the model never saw (membership-inference negatives,
    probe floors). ``forget_texts`` / ``retain_texts`` are free text (bios, concept texts) for
    losses that train on text rather than on question/answer pairs.
    """

    name: str
    """Short identifier, e.g. ``forget10`` or ``concept:Japan``."""
    forget: tuple[Item, ...]
    """Items whose knowledge should be removed."""
    retain: tuple[Item, ...]
    """Items whose knowledge must be kept."""
    holdout: tuple[Item, ...] = ()
    """Items about subjects never seen in training."""
    forget_texts: tuple[str, ...] = ()
    """Free texts about the forget subjects."""
    retain_texts: tuple[str, ...] = ()
    """Free texts about the retain subjects."""
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    """Free-form provenance (world seed, forget fraction …); never used for scoring."""

    def __post_init__(self) -> None:
        if not self.forget:
            raise ValueError(
                f"Target {self.name!r} has an empty forget set: give at least one forget item "
                "(e.g. a larger forget fraction, or a concept with questions)."
            )

    def split(self, name: str) -> tuple[Item, ...]:
        """The items of one split (``forget``, ``retain`` or ``holdout``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(SPLITS)}")
        return getattr(self, name)

    def where(self, **conditions: str | Iterable[str]) -> "Target":
        """A target keeping, in every split, only items whose fields match ``conditions``.

        >>> t.where(paraphrase="heldout")            # only held-out templates
        >>> t.where(attribute=["birth_city", "employer"])
        """

        def keep(item: Item) -> bool:
            for key, want in conditions.items():
                if not hasattr(item, key):
                    raise ValueError(f"Item has no field {key!r}; fields: {list(Item.__dataclass_fields__)}")
                value = getattr(item, key)
                if isinstance(want, str):
                    if value != want:
                        return False
                elif value not in set(want):
                    return False
            return True

        forget = tuple(i for i in self.forget if keep(i))
        return Target(
            name=self.name,
            forget=forget,
            retain=tuple(i for i in self.retain if keep(i)),
            holdout=tuple(i for i in self.holdout if keep(i)),
            forget_texts=self.forget_texts,
            retain_texts=self.retain_texts,
            meta=dict(self.meta, where=conditions),
        )


def seeded_subset(items: Sequence, n: int | None, seed: int) -> list:
    """A seeded random subset of ``n`` items, kept in their original order (all if ``n`` is None)."""
    items = list(items)
    if n is not None and n < 1:
        raise ValueError(f"a subset needs n >= 1 items (or None for all), got {n}")
    if n is None or n >= len(items):
        return items
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:n]
    return [items[i] for i in sorted(order.tolist())]
