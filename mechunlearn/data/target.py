"""`Item` and `Target`: what to forget and what to keep. Data only, no model, no I/O.

`Target.from_records` builds a target from plain records (dicts) and validates them strictly;
`mechunlearn.data.files.load_target` reads those records from files (QA tables, TOFU's layout,
multiple choice, text corpora; the README's "Your data" section shows one line of each).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

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
    """``trained`` when the template was seen in training, ``heldout`` when it never was (a
    file's ``paraphrase`` column, another wording of the question, becomes a ``heldout`` item)."""
    paraphrased_answers: tuple[str, ...] = ()
    """The true answer in other wordings (TOFU's ``paraphrased_answer``; the truth ratio's numerator)."""
    perturbed_answers: tuple[str, ...] = ()
    """False answers in the same wording (TOFU's ``perturbed_answer``; the truth ratio's denominator)."""
    context: str = ""
    """A sentence that states the fact (the reintroduction attack puts it before the question)."""
    choices: tuple[str, ...] = ()
    """The options of a multiple-choice question (``answer`` is ``choices[answer_index]``)."""
    answer_index: int = -1
    """Index of the right option in ``choices`` (-1 for open questions)."""


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
    holdout_texts: tuple[str, ...] = ()
    """Free texts never trained on (membership-inference negatives of a corpus target)."""
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    """Free-form provenance (world seed, forget fraction …); never used for scoring."""

    def __post_init__(self) -> None:
        if not self.forget and not self.forget_texts:
            raise ValueError(
                f"Target {self.name!r} has an empty forget set: give at least one forget item or text "
                "(e.g. a larger forget fraction, or a concept with questions)."
            )

    @classmethod
    def from_records(cls, records: Iterable[Mapping], *, name: str = "records", split: str | None = None, protocol: str | None = None, source: str = "records") -> "Target":
        """A target from records (dicts) of one kind, checked strictly (`records_to_target`).

        >>> Target.from_records([{"split": "forget", "question": "Who wrote Dune ?", "answer": "Frank Herbert"},
        ...                      {"split": "retain", "question": "Who wrote Emma ?", "answer": "Jane Austen"}])
        """
        rows = [(f"{source} record {i + 1}", r, split) for i, r in enumerate(records)]
        return records_to_target(rows, name=name, protocol=protocol, source=source)

    @property
    def kind(self) -> str:
        """``choice`` (multiple-choice items), ``corpus`` (texts only) or ``qa``."""
        if not self.forget:
            return "corpus"
        return "choice" if self.forget[0].choices else "qa"

    def has(self, field_name: str, split: str = "forget") -> bool:
        """Whether every item of ``split`` carries ``field_name`` (non-empty), and there is one."""
        items = self.split(split)
        return bool(items) and all(getattr(it, field_name) for it in items)

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

        return replace(
            self,
            forget=tuple(i for i in self.forget if keep(i)),
            retain=tuple(i for i in self.retain if keep(i)),
            holdout=tuple(i for i in self.holdout if keep(i)),
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


# --------------------------------------------------------------------------- records -> Target

QA_FIELDS = ("split", "prompt", "question", "answer", "subject", "attribute", "paraphrase", "paraphrased_question", "paraphrased_answer", "perturbed_answers", "perturbed_answer", "context")
"""Columns a QA record may have (``question`` / ``paraphrased_question`` / ``perturbed_answer``
are TOFU's names for ``prompt`` / ``paraphrase`` / ``perturbed_answers``); others are refused."""
CHOICE_FIELDS = ("split", "question", "prompt", "choices", "answer", "subject")
"""Columns of a multiple-choice record (WMDP / MMLU layout)."""
TEXT_FIELDS = ("split", "text", "subject")
"""Columns of a corpus record."""
KIND_HELP = (
    "a QA record needs prompt (or question) and answer; a multiple-choice record question, choices (a list) "
    "and answer (the right choice's index); a corpus record text"
)


class RecordError(ValueError):
    """A record that cannot become part of a target; the message names where it is and the fix."""


def _kind(where: str, record: Mapping) -> str:
    if "choices" in record:
        return "choice"
    if "text" in record and "answer" not in record:
        return "corpus"
    if "answer" in record or "prompt" in record or "question" in record:
        return "qa"
    raise RecordError(f"{where}: cannot tell what this record is (columns {sorted(record)}); {KIND_HELP}")


def _text(where: str, record: Mapping, *names: str, required: bool = True) -> str:
    for key in names:
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RecordError(f"{where}: column {key!r} must be a string, got {type(value).__name__} {value!r}")
        if not value.strip() and required:
            raise RecordError(f"{where}: column {key!r} is empty; give the {key} text")
        return value.strip()
    if required:
        alias = repr(names[0]) + "".join(f" (or {n!r})" for n in names[1:])
        raise RecordError(f"{where}: missing column {alias}; {KIND_HELP}")
    return ""


def _texts(where: str, record: Mapping, key: str) -> tuple[str, ...]:
    value = record.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        return (value.strip(),) if value.strip() else ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise RecordError(f"{where}: column {key!r} must be a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _check_columns(where: str, record: Mapping, allowed: Sequence[str], kind: str) -> None:
    extra = sorted(set(record) - set(allowed))
    if extra:
        raise RecordError(f"{where}: unknown column(s) {extra} for a {kind} record; allowed: {list(allowed)} (rename or drop them)")


def _record_split(where: str, record: Mapping, split: str | None) -> str:
    value = record.get("split")
    if value is None:
        if split is None:
            raise RecordError(f"{where}: missing column 'split'; give each record a split ({', '.join(SPLITS)}), or one file per split")
        return split
    if value not in SPLITS:
        raise RecordError(f"{where}: unknown split {value!r}; use one of {', '.join(SPLITS)}")
    if split is not None and value != split:
        raise RecordError(f"{where}: split {value!r} in a file read as the {split!r} split; drop the split column or fix it")
    return value


def _choice_item(where: str, record: Mapping) -> Item:
    _check_columns(where, record, CHOICE_FIELDS, "multiple-choice")
    question = _text(where, record, "question", "prompt")
    choices = record.get("choices")
    if not isinstance(choices, (list, tuple)) or len(choices) < 2 or not all(isinstance(c, str) and c.strip() for c in choices):
        raise RecordError(f"{where}: 'choices' must be a list of at least 2 non-empty strings, got {choices!r}")
    index = record.get("answer")
    if isinstance(index, bool) or not isinstance(index, int):
        raise RecordError(f"{where}: 'answer' of a multiple-choice record must be the right choice's index (an integer 0..{len(choices) - 1}), got {index!r}")
    if not 0 <= index < len(choices):
        raise RecordError(f"{where}: choice index {index} out of range for {len(choices)} choices; use 0..{len(choices) - 1}")
    choices = tuple(c.strip() for c in choices)
    return Item(question, choices[index], subject=_text(where, record, "subject", required=False), choices=choices, answer_index=index)


def _qa_items(where: str, record: Mapping) -> list[Item]:
    _check_columns(where, record, QA_FIELDS, "QA")
    prompt = _text(where, record, "prompt", "question")
    common = dict(
        answer=_text(where, record, "answer"),
        subject=_text(where, record, "subject", required=False),
        attribute=_text(where, record, "attribute", required=False),
        paraphrased_answers=_texts(where, record, "paraphrased_answer"),
        perturbed_answers=_texts(where, record, "perturbed_answers") or _texts(where, record, "perturbed_answer"),
        context=_text(where, record, "context", required=False),
    )
    items = [Item(prompt, template="question", paraphrase="trained", **common)]
    reworded = _text(where, record, "paraphrase", "paraphrased_question", required=False)
    if reworded:
        items.append(Item(reworded, template="paraphrase", paraphrase="heldout", **common))
    return items


def records_to_target(rows: Sequence[tuple[str, Mapping, str | None]], *, name: str, protocol: str | None = None, source: str = "records", meta: Mapping | None = None) -> Target:
    """A `Target` from ``(where, record, split)`` triples: ``where`` names the record in errors
    (``file:line``), ``split`` is its split when it has no ``split`` column (one file per split).

    Records are all of one kind (QA, multiple choice or corpus; module constants list their
    columns).
    Raises `RecordError` on a missing or unknown column, an unknown split, an empty forget or
    retain split, the same item (prompt and answer, or text) in two splits, or a choice index
    out of range; every message names the record and the fix.
    """
    if not rows:
        raise RecordError(f"{source}: no records; give forget and retain records")
    kinds: dict[str, str] = {}
    items: dict[str, list[Item]] = {s: [] for s in SPLITS}
    texts: dict[str, list[str]] = {s: [] for s in SPLITS}
    seen: dict[tuple, tuple[str, str]] = {}
    for where, record, split in rows:
        if split is not None and split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
        if not isinstance(record, Mapping):
            raise RecordError(f"{where}: a record must be an object with named columns, got {type(record).__name__}")
        record = {k: v for k, v in record.items() if v is not None}
        kind = _kind(where, record)
        kinds.setdefault(kind, where)
        if len(kinds) > 1:
            other = next(k for k in kinds if k != kind)
            raise RecordError(f"{where}: a {kind} record among {other} records (first at {kinds[other]}); put each kind in its own file")
        at = _record_split(where, record, split)
        if kind == "corpus":
            _check_columns(where, record, TEXT_FIELDS, "corpus")
            text = _text(where, record, "text")
            keys, new = [(text,)], []
            texts[at].append(text)
        else:
            new = [_choice_item(where, record)] if kind == "choice" else _qa_items(where, record)
            keys = [(it.prompt, it.answer) for it in new]
        for key in keys:
            if key in seen and seen[key][1] != at:
                before, other = seen[key]
                raise RecordError(f"{where}: the same item is in the {other!r} split ({before}) and the {at!r} split; keep it in one split")
            seen.setdefault(key, (where, at))
        items[at].extend(new)
    kind = next(iter(kinds))
    store = texts if kind == "corpus" else items
    for need in ("forget", "retain"):
        if not store[need]:
            raise RecordError(f"{source}: the {need!r} split is empty; add {need} records (split: {need}), or give the {need} file")
    meta = {"source": source, "kind": kind, **(meta or {})}
    if protocol is not None:
        meta["protocol"] = protocol
    if kind == "corpus":
        return Target(name, (), (), forget_texts=tuple(texts["forget"]), retain_texts=tuple(texts["retain"]), holdout_texts=tuple(texts["holdout"]), meta=meta)
    return Target(name, tuple(items["forget"]), tuple(items["retain"]), tuple(items["holdout"]), meta=meta)
