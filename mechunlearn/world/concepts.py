"""`ConceptSet`: concepts a real model knows, and (once located) the value vector of each.

A concept has a name, reference words (whose tokens a concept vector should promote), questions
with short answers that the model gets right, unrelated questions (the control), and free texts
(what Needle trains on). A *located* concept also carries a `ConceptLocation`: the layer and
index of its validated value vector, its top tokens and its validation scores. Files live in
``concept_vectors/`` (schema in ``concept_vectors/README.md``); a located file records the model
id and the hash of the weights it was located in, and refuses to load into other weights unless
forced.

>>> concepts = ConceptSet.load(concept_file("smollm2-135m"), model=model)
>>> target = concepts.target("Japan")          # forget: Japan questions; retain: unrelated ones
>>> concepts["Japan"].location.site
Site('blocks.23.mlp.W_out[1508]')
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from mechunlearn.core.result import atomic_write_text
from mechunlearn.core.site import Site
from mechunlearn.world.target import Item, Target

if TYPE_CHECKING:
    from mechunlearn.models.model import Model

SCHEMA = "mechunlearn.concept_vectors/1"
"""Identifier written into every concept file; loading refuses other schemas."""


@dataclass(frozen=True)
class ConceptLocation:
    """Where a concept's validated value vector lives, and how it scored."""

    layer: int
    """Block of the MLP."""
    index: int
    """Row of ``blocks.{layer}.mlp.W_out`` (the value vector)."""
    sign: int = 1
    """+1 if the vector promotes the concept's tokens, −1 if its negation does (gated MLPs)."""
    score: float = 0.0
    """Scan score (nDCG@k of the reference tokens, or overlap; see `ScanConfig.scoring`)."""
    rank: int = 0
    """Rank of the vector among the concept's scan candidates (0 = best scan score)."""
    top_tokens: tuple[str, ...] = ()
    """The vector's top tokens (of its sign) by vocabulary projection."""
    reference_tokens: tuple[str, ...] = ()
    """The reference tokens it was scored against (decoded)."""
    reference_ids: tuple[int, ...] = ()
    """Their token ids."""
    validation: Mapping[str, float] = field(default_factory=dict)
    """Validation summary (BLEU / ROUGE-L / exact match on concept vs unrelated questions, gap)."""

    def __post_init__(self) -> None:
        if self.layer < 0 or self.index < 0:
            raise ValueError(f"layer and index must be >= 0, got layer={self.layer}, index={self.index}")
        if self.sign not in (1, -1):
            raise ValueError(f"sign must be 1 or -1, got {self.sign}")
        object.__setattr__(self, "validation", MappingProxyType(dict(self.validation)))

    @property
    def site(self) -> Site:
        """The value vector's site, e.g. ``blocks.23.mlp.W_out[1508]``."""
        return Site("param", f"blocks.{self.layer}.mlp.W_out", (self.index,))


@dataclass(frozen=True)
class Concept:
    """One concept: questions the model answers, unrelated control questions, texts, reference words."""

    name: str
    """Display name and key, e.g. ``Japan``."""
    reference_words: tuple[str, ...]
    """Words whose single-token forms make the reference token set (e.g. Japan, Japanese, Tokyo)."""
    questions: tuple[Item, ...]
    """Questions or completion prompts about the concept, with the short answer the model gives."""
    unrelated: tuple[Item, ...]
    """Control questions about other things, which the model also answers."""
    texts: tuple[str, ...] = ()
    """Free texts about the concept (Needle's gradient-ascent data)."""
    category: str = ""
    """Kind of concept: country, city, person, planet, work, science …"""
    location: ConceptLocation | None = None
    """The located, validated value vector (``None`` in hand-written definitions)."""

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a concept needs a non-empty name")
        if not self.reference_words:
            raise ValueError(f"concept {self.name!r} has no reference words")
        if not self.questions:
            raise ValueError(f"concept {self.name!r} has no questions; give at least one question with its answer")
        for item in (*self.questions, *self.unrelated):
            if not isinstance(item, Item):
                raise TypeError(f"concept {self.name!r}: questions must be Items, got {type(item).__name__}")
            if not item.prompt.strip() or not item.answer.strip():
                raise ValueError(f"concept {self.name!r}: question {item.prompt!r} needs a prompt and an answer")
        object.__setattr__(self, "reference_words", tuple(self.reference_words))
        object.__setattr__(self, "questions", tuple(self.questions))
        object.__setattr__(self, "unrelated", tuple(self.unrelated))
        object.__setattr__(self, "texts", tuple(self.texts))

    def target(self) -> Target:
        """`Target` with the concept's questions as forget items, the unrelated questions as retain
        items and the concept's texts as forget texts."""
        if not self.unrelated:
            raise ValueError(f"concept {self.name!r} has no unrelated questions, so nothing to retain")
        meta = {"concept": self.name, "category": self.category, "reference_words": list(self.reference_words)}
        if self.location is not None:
            meta["site"] = str(self.location.site)
        return Target(
            name=f"concept:{self.name}",
            forget=self.questions,
            retain=self.unrelated,
            forget_texts=self.texts,
            meta=meta,
        )

    # ----- JSON
    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (see ``concept_vectors/README.md``)."""
        record: dict[str, Any] = {"concept": self.name, "category": self.category}
        if self.location is not None:
            loc = self.location
            record.update(
                site=str(loc.site),
                layer=loc.layer,
                index=loc.index,
                sign=loc.sign,
                score=loc.score,
                rank=loc.rank,
                top_tokens=list(loc.top_tokens),
                reference_tokens=list(loc.reference_tokens),
                reference_ids=list(loc.reference_ids),
                validation=dict(loc.validation),
            )
        record.update(
            reference_words=list(self.reference_words),
            questions=[_item_dict(i) for i in self.questions],
            unrelated_questions=[_item_dict(i) for i in self.unrelated],
            texts=list(self.texts),
        )
        return record

    @staticmethod
    def from_dict(record: Mapping[str, Any]) -> "Concept":
        """Inverse of `to_dict`; errors name the concept and the missing key."""
        name = record.get("concept", "?")
        try:
            location = None
            if "layer" in record:
                location = ConceptLocation(
                    layer=int(record["layer"]),
                    index=int(record["index"]),
                    sign=int(record.get("sign", 1)),
                    score=float(record.get("score", 0.0)),
                    rank=int(record.get("rank", 0)),
                    top_tokens=tuple(record.get("top_tokens", ())),
                    reference_tokens=tuple(record.get("reference_tokens", ())),
                    reference_ids=tuple(int(t) for t in record.get("reference_ids", ())),
                    validation=record.get("validation", {}),
                )
            return Concept(
                name=record["concept"],
                category=record.get("category", ""),
                reference_words=tuple(record["reference_words"]),
                questions=tuple(_item(q, record["concept"], "concept") for q in record["questions"]),
                unrelated=tuple(_item(q, q.get("subject", ""), "unrelated") for q in record.get("unrelated_questions", ())),
                texts=tuple(record.get("texts", ())),
                location=location,
            )
        except KeyError as err:
            raise ValueError(f"concept record {name!r} is missing the key {err.args[0]!r}") from None


def _item_dict(item: Item) -> dict[str, str]:
    out = {"prompt": item.prompt, "answer": item.answer}
    if item.attribute == "unrelated" and item.subject:
        out["subject"] = item.subject
    return out


def _item(record: Mapping[str, Any], subject: str, attribute: str) -> Item:
    if "prompt" not in record or "answer" not in record:
        raise KeyError("prompt/answer")
    return Item(prompt=record["prompt"], answer=record["answer"], subject=subject, attribute=attribute, template=attribute)


@dataclass(frozen=True)
class ConceptSet:
    """An ordered set of concepts for one model, optionally located in specific weights.

    ``weights_hash`` is ``None`` for hand-written definitions and the `Model.weights_hash` of the
    weights a located file was made from.
    """

    model_id: str
    """The model the concepts were written for / located in (e.g. ``smollm2-135m``)."""
    concepts: tuple[Concept, ...]
    """The concepts, in file order."""
    weights_hash: str | None = None
    """SHA-256 of the weights the vectors were located in (``None``: not located)."""
    meta: Mapping[str, Any] = field(default_factory=dict)
    """Provenance: configs, package version, rejected concepts and why."""

    def __post_init__(self) -> None:
        concepts = tuple(self.concepts)
        names = [c.name for c in concepts]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"concept names must be unique; duplicated: {dupes}")
        object.__setattr__(self, "concepts", concepts)
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))

    # ----- access
    @property
    def names(self) -> list[str]:
        """Concept names in order."""
        return [c.name for c in self.concepts]

    def __len__(self) -> int:
        return len(self.concepts)

    def __iter__(self) -> Iterator[Concept]:
        return iter(self.concepts)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __getitem__(self, name: str) -> Concept:
        for concept in self.concepts:
            if concept.name == name:
                return concept
        raise KeyError(f"no concept {name!r} in this set; concepts: {', '.join(self.names)}")

    @property
    def located(self) -> bool:
        """True when every concept carries a `ConceptLocation`."""
        return bool(self.concepts) and all(c.location is not None for c in self.concepts)

    def subset(self, names: Sequence[str]) -> "ConceptSet":
        """A set with only the named concepts (in the given order)."""
        return replace(self, concepts=tuple(self[n] for n in names))

    def target(self, name: str) -> Target:
        """The `Target` of one concept (see `Concept.target`)."""
        return self[name].target()

    def reference_ids(self, model: "Model") -> dict[str, list[int]]:
        """Each concept's reference token ids for ``model`` (located files keep the ids they used)."""
        from mechunlearn.models.text import reference_ids

        out = {}
        for c in self.concepts:
            if c.location is not None and c.location.reference_ids:
                out[c.name] = list(c.location.reference_ids)
            else:
                out[c.name] = reference_ids(model, c.reference_words)
        return out

    # ----- files
    def to_dict(self) -> dict[str, Any]:
        """JSON-able form of the whole set."""
        return {
            "schema": SCHEMA,
            "model_id": self.model_id,
            "weights_hash": self.weights_hash,
            "meta": _jsonable(dict(self.meta)),
            "concepts": [_jsonable(c.to_dict()) for c in self.concepts],
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> "ConceptSet":
        """Inverse of `to_dict`; refuses unknown schemas."""
        schema = data.get("schema")
        if schema != SCHEMA:
            raise ValueError(f"not a concept file of schema {SCHEMA!r} (found {schema!r})")
        if "model_id" not in data or "concepts" not in data:
            raise ValueError("a concept file needs 'model_id' and 'concepts'")
        return ConceptSet(
            model_id=data["model_id"],
            concepts=tuple(Concept.from_dict(r) for r in data["concepts"]),
            weights_hash=data.get("weights_hash"),
            meta=data.get("meta", {}),
        )

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set as JSON, atomically (temp file, then rename). Same set, same bytes."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n")
        return path

    @staticmethod
    def load(path: str | os.PathLike, model: "Model | None" = None, *, force: bool = False, check: bool = True) -> "ConceptSet":
        """Read a concept file and check it was located in exactly ``model``'s weights.

        Raises `ConceptFileMismatch` when the file's model id or weights hash differs from the
        model's (unless ``force=True``, which only logs a warning). A location is a row index,
        which in other weights is some other vector, so the model is required: ``check=False``
        reads the file without it (to look at it, not to edit with it) and says so in the log.
        """
        import logging

        if model is None and check:
            raise ValueError(
                "pass model= to check that the concept file was located in this model's weights (a location in other "
                "weights names some other vector), or check=False to read it without a model"
            )
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no concept file at {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        concepts = ConceptSet.from_dict(data)
        if model is not None:
            concepts.check_model(model, force=force, source=str(path))
        else:
            logging.getLogger(__name__).info("read %s without a model: its locations were not checked against any weights", path)
        return concepts

    def check_model(self, model: "Model", *, force: bool = False, source: str = "this concept set") -> None:
        """Raise `ConceptFileMismatch` unless the set was made for ``model``'s exact weights."""
        import logging

        problems = []
        if self.model_id != model.model_id:
            problems.append(f"it was made for model {self.model_id!r}, not {model.model_id!r}")
        if self.weights_hash is not None:
            actual = model.weights_hash()
            if actual != self.weights_hash:
                problems.append(
                    f"it was located in weights {self.weights_hash[:12]}…, but the model's weights hash to {actual[:12]}… "
                    "(an edit is applied, or the weights changed)"
                )
        if not problems:
            return
        message = f"{source}: " + "; ".join(problems)
        if force:
            logging.getLogger(__name__).warning("%s (loaded anyway: force=True)", message)
            return
        raise ConceptFileMismatch(
            message + ". Regenerate it with mechunlearn.locate.concept_vectors.build_concept_file(model, ...), "
            "revert any active edit, or pass force=True to load it anyway."
        )


def concept_file(model_id: str) -> Path:
    """Path of the checked-in located file for a model: ``concept_vectors/<model_id>.json`` in the source checkout."""
    root = Path(__file__).resolve().parents[2] / "concept_vectors"
    path = root / f"{model_id}.json"
    if not path.exists():
        have = sorted(p.stem for p in root.glob("*.json")) if root.is_dir() else []
        raise FileNotFoundError(
            f"no concept file for {model_id!r} at {path} (files for: {', '.join(have) or 'none'}); "
            "build one with mechunlearn.locate.concept_vectors.build_concept_file"
        )
    return path


class ConceptFileMismatch(ValueError):
    """A concept file was loaded into a model other than the one it was located in."""


def _jsonable(value: Any) -> Any:
    """Dataclasses and tuples to plain JSON types (for ``meta``)."""
    from dataclasses import asdict, is_dataclass

    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()  # numpy scalars from pandas tables
    return value
