"""`World`: a synthetic fictitious world of people, their bios, questions and splits.

Everything is drawn from the fixed pools (:mod:`mechunlearn.world.pools`) and templates
(:mod:`mechunlearn.world.templates`) with ``random.Random`` streams seeded from
``WorldConfig.seed`` and a purpose string (``"{seed}:bios:{name}"`` ...), so the world is
byte-identical for the same config, and one person's bios do not change when another person is
added or left out.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from typing import Iterable

from mechunlearn.world import pools
from mechunlearn.world.config import WorldConfig
from mechunlearn.world.target import Item, Target
from mechunlearn.world.templates import (
    ANSWER_TEMPLATES,
    ATTRIBUTES,
    BIO_ATTRIBUTES,
    BIO_TEMPLATES,
    EMPLOYER_FACT_TEMPLATES,
    question_templates,
)

logger = logging.getLogger(__name__)

PARAPHRASES = ("trained", "heldout", "all")
_JSON_FORMAT = 1


@dataclass(frozen=True)
class Person:
    """A fictitious person: a unique full name and one value per attribute."""

    name: str
    """Full name, ``"<first> <last>"``."""
    attributes: dict[str, str] = field(hash=False)
    """Attribute name -> value, for every attribute in :data:`ATTRIBUTES` (do not mutate)."""

    def __getitem__(self, attribute: str) -> str:
        """The value of one attribute."""
        return self.attributes[attribute]


class World:
    """A deterministic synthetic world built from a :class:`WorldConfig`.

    Public attributes (treat as read-only): ``config``; ``people`` (trained people, forget +
    retain, tuple of :class:`Person`); ``holdout_people`` (people with facts and bios who never
    appear in training); ``nonexistent`` (names only, trained to be answered ``unknown``);
    ``employer_cities`` (employer -> city).

    Example::

        w = World(WorldConfig(n_people=200, seed=0))
        w.questions(w.people[0], "birth_city")[0].prompt  # 'Quiz: where was <name> born? Answer:'
    """

    ATTRIBUTES: tuple[str, ...] = ATTRIBUTES
    """The six attribute names, in their fixed order."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config if config is not None else WorldConfig()
        if not isinstance(self.config, WorldConfig):
            raise TypeError(f"World needs a WorldConfig, got {type(self.config).__name__}")
        self._json: str | None = None
        self._build()

    @classmethod
    def build(cls, config: WorldConfig | None = None) -> "World":
        """Build a world (same as ``World(config)``)."""
        return cls(config)

    # ------------------------------------------------------------------ construction

    def _rng(self, *purpose: object) -> random.Random:
        # str seeds are hashed with sha512 by `random`, independent of PYTHONHASHSEED.
        return random.Random(":".join([str(self.config.seed), *map(str, purpose)]))

    def _build(self) -> None:
        cfg = self.config
        rng = self._rng("employers")
        # Employer -> its city. Drawn with replacement: several employers may share a city, so
        # work_city does not identify the employer.
        self.employer_cities: dict[str, str] = {e: rng.choice(pools.CITIES) for e in pools.EMPLOYERS}

        # Shuffle every full name once and slice, so each group is a prefix-stable draw: changing
        # n_nonexistent (say) leaves the trained and holdout people as they were.
        names = [f"{f} {l}" for f in pools.FIRST_NAMES for l in pools.LAST_NAMES]
        self._rng("names").shuffle(names)
        trained = names[: cfg.n_people]
        holdout = names[cfg.n_people : cfg.n_people + cfg.n_holdout]
        # Trained people (forget + retain); holdout people have facts and bios but never appear
        # in training; non-existent people are names only, trained to be answered ``unknown``.
        self.people: tuple[Person, ...] = tuple(self._make_person(n) for n in trained)
        self.holdout_people: tuple[Person, ...] = tuple(self._make_person(n) for n in holdout)
        self.nonexistent: tuple[str, ...] = tuple(
            names[cfg.n_people + cfg.n_holdout : cfg.n_people + cfg.n_holdout + cfg.n_nonexistent]
        )
        self._by_name: dict[str, Person] = {p.name: p for p in self.people + self.holdout_people}
        self._trained_names = frozenset(trained)
        self._nonexistent_names = frozenset(self.nonexistent)
        self._forget_order: tuple[str, ...] = tuple(self._rng("forget").sample(trained, len(trained)))
        self._bios: dict[str, tuple[str, ...]] = {
            p.name: self._make_bios(p) for p in self.people + self.holdout_people
        }
        self._documents: tuple[tuple[str, str], ...] = self._make_documents()
        logger.debug(
            "built world seed=%d: %d people, %d holdout, %d non-existent, %d training documents",
            cfg.seed, len(self.people), len(self.holdout_people), len(self.nonexistent),
            len(self._documents),
        )

    def _make_person(self, name: str) -> Person:
        rng = self._rng("attributes", name)
        values = {
            "birth_city": rng.choice(pools.CITIES),
            "birth_year": rng.choice(pools.BIRTH_YEARS),
            "university": rng.choice(pools.UNIVERSITIES),
            "major": rng.choice(pools.MAJORS),
            "employer": rng.choice(pools.EMPLOYERS),
        }
        values["work_city"] = self.employer_cities[values["employer"]]
        return Person(name, {a: values[a] for a in ATTRIBUTES})

    def _make_bios(self, person: Person) -> tuple[str, ...]:
        rng = self._rng("bios", person.name)
        bios = []
        for _ in range(self.config.bios_per_person):
            sentences = [
                rng.choice(BIO_TEMPLATES[a]).format(name=person.name, value=person[a]) for a in BIO_ATTRIBUTES
            ]
            rng.shuffle(sentences)
            bios.append(" ".join(sentences))
        return tuple(bios)

    def _make_documents(self) -> tuple[tuple[str, str], ...]:
        """Every training document as (subject, text), shuffled; subject "" for employer facts."""
        cfg = self.config
        docs: list[tuple[str, str]] = []
        for person in self.people:
            docs.extend((person.name, bio) for bio in self._bios[person.name])
            for attribute in ATTRIBUTES:
                for t in self._trained_sample(person.name, attribute, cfg.qa_per_fact):
                    docs.append((person.name, f"{t.render(person.name)} {person[attribute]}"))
        for name in self.nonexistent:
            for attribute in ATTRIBUTES:
                for t in self._trained_sample(name, attribute, cfg.unknown_qa_per_fact):
                    docs.append((name, f"{t.render(name)} {pools.UNKNOWN_ANSWER}"))
            docs.extend((name, text) for text in self._context_qa(name))
        for _ in range(cfg.employer_fact_repeats):
            for employer in pools.EMPLOYERS:
                city = self.employer_cities[employer]
                docs.extend(("", t.format(employer=employer, city=city)) for t in EMPLOYER_FACT_TEMPLATES)
        self._rng("shuffle").shuffle(docs)
        return tuple(docs)

    def _context_qa(self, name: str) -> list[str]:
        """``context_qa_per_fact`` reading documents per attribute for a non-existent ``name``."""
        rng = self._rng("context", name)
        texts = []
        for attribute in ATTRIBUTES:
            stated = "employer" if attribute == "work_city" else attribute
            for _ in range(self.config.context_qa_per_fact):
                value = rng.choice(pools.VALUE_POOLS[stated])
                answer = self.employer_cities[value] if attribute == "work_city" else value
                sentence = rng.choice(BIO_TEMPLATES[stated]).format(name=name, value=value)
                question = rng.choice(question_templates(attribute, "trained")).render(name)
                texts.append(f"{sentence} {question} {answer}")
        return texts

    def _trained_sample(self, name: str, attribute: str, k: int):
        templates = question_templates(attribute, "trained")
        return self._rng("qa", name, attribute).sample(templates, k)

    # ------------------------------------------------------------------ lookup

    def person(self, person: Person | str) -> Person:
        """The trained or holdout :class:`Person` with this name (or the person itself)."""
        name = person.name if isinstance(person, Person) else person
        try:
            return self._by_name[name]
        except KeyError:
            kind = " (a non-existent person: they have no attributes)" if name in self._nonexistent_names else ""
            raise ValueError(f"no trained or holdout person named {name!r} in this world{kind}") from None

    def _check_attribute(self, attribute: str) -> None:
        if attribute not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {attribute!r}; choose one of {', '.join(ATTRIBUTES)}")

    # ------------------------------------------------------------------ splits

    def forget_people(self, frac: float = 0.1) -> tuple[str, ...]:
        """Names of the forget people for a fraction of the trained people (nested: 1% ⊂ 5% ⊂ 10%)."""
        k = self._forget_count(frac)
        chosen = set(self._forget_order[:k])
        return tuple(p.name for p in self.people if p.name in chosen)

    def retain_people(self, frac: float = 0.1) -> tuple[str, ...]:
        """Names of the trained people that are not forgotten at this forget fraction."""
        forget = set(self.forget_people(frac))
        return tuple(p.name for p in self.people if p.name not in forget)

    def _forget_count(self, frac: float) -> int:
        if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 1:
            raise ValueError(f"forget fraction must be a number strictly between 0 and 1, got {frac!r}")
        n = len(self.people)
        k = math.floor(frac * n + 0.5)
        if k < 1:
            raise ValueError(
                f"forget fraction {frac} of {n} people selects nobody; use at least {1 / n:.4g}"
            )
        if k >= n:
            raise ValueError(f"forget fraction {frac} of {n} people leaves no retain people; use a smaller one")
        return k

    # ------------------------------------------------------------------ texts and items

    def questions(self, person: Person | str, attribute: str, paraphrase: str = "trained") -> list[Item]:
        """One :class:`Item` per question template of ``attribute`` about ``person``.

        ``paraphrase`` is ``trained``, ``heldout`` or ``all``. A non-existent person's answer is
        ``unknown``.
        """
        self._check_attribute(attribute)
        if paraphrase not in PARAPHRASES:
            raise ValueError(f"unknown paraphrase {paraphrase!r}; choose one of {', '.join(PARAPHRASES)}")
        name = person.name if isinstance(person, Person) else person
        facts: dict = {}
        if name in self._nonexistent_names:
            answer = pools.UNKNOWN_ANSWER
        else:
            answer = self.person(name)[attribute]
            facts = {
                "paraphrased_answers": tuple(self.paraphrased_answers(name, attribute)),
                "perturbed_answers": tuple(self.perturbed_answers(name, attribute)),
                "context": self.context(name, attribute),
            }
        return [
            Item(
                prompt=t.render(name),
                answer=answer,
                subject=name,
                attribute=attribute,
                template=t.id,
                paraphrase=t.paraphrase,
                **facts,
            )
            for t in question_templates(attribute, paraphrase)
        ]

    def context(self, person: Person | str, attribute: str) -> str:
        """A bio sentence that states the fact (the first wording of `BIO_TEMPLATES`), for the
        reintroduction attack; ``work_city``, which no bio states, gets the employer's sentence,
        from which the city follows in two hops (the employer facts)."""
        p = self.person(person)
        stated = attribute if attribute in BIO_TEMPLATES else "employer"
        return BIO_TEMPLATES[stated][0].format(name=p.name, value=p[stated])

    def paraphrased_answers(self, person: Person | str, attribute: str) -> list[str]:
        """The true fact in full sentences, in wordings never used in training."""
        self._check_attribute(attribute)
        p = self.person(person)
        return [t.format(name=p.name, value=p[attribute]) for t in ANSWER_TEMPLATES[attribute]]

    def perturbed_answers(self, person: Person | str, attribute: str) -> list[str]:
        """Wrong facts (distinct wrong values) in the wording of ``paraphrased_answers(...)[0]``."""
        self._check_attribute(attribute)
        p = self.person(person)
        wrong = [v for v in pools.VALUE_POOLS[attribute] if v != p[attribute]]
        values = self._rng("perturb", p.name, attribute).sample(wrong, self.config.n_perturbed)
        template = ANSWER_TEMPLATES[attribute][0]
        return [template.format(name=p.name, value=v) for v in values]

    def bios(self, person: Person | str) -> list[str]:
        """The bios of a trained or holdout person (holdout bios are never trained on)."""
        return list(self._bios[self.person(person).name])

    def employer_facts(self) -> list[str]:
        """One sentence per (employer, wording) stating where the employer is based."""
        return [
            t.format(employer=e, city=self.employer_cities[e])
            for e in pools.EMPLOYERS
            for t in EMPLOYER_FACT_TEMPLATES
        ]

    def training_texts(self, exclude: Iterable[str] = ()) -> list[str]:
        """Every training document, shuffled: bios, trained-template QA (``"{prompt} {answer}"``),
        ``unknown`` QA about non-existent people, reading-from-context QA about them, employer facts.

        People named in ``exclude`` are left out entirely (to train a retain model).
        """
        if isinstance(exclude, str):
            raise ValueError("exclude must be a collection of names, not one string; use exclude=[name]")
        excluded = set()
        for name in exclude:
            name = name.name if isinstance(name, Person) else name
            if name not in self._trained_names:
                raise ValueError(f"cannot exclude {name!r}: it is not a trained person of this world")
            excluded.add(name)
        return [text for subject, text in self._documents if subject not in excluded]

    def target(self, forget_frac: float = 0.1, paraphrase: str = "all") -> Target:
        """Forget / retain / holdout items for a forget fraction; texts are the people's bios.

        ``paraphrase`` (``trained``, ``heldout`` or ``all``) selects the question templates; use
        ``Target.where(paraphrase=...)`` to split an ``all`` target later.
        """
        if paraphrase not in PARAPHRASES:
            raise ValueError(f"unknown paraphrase {paraphrase!r}; choose one of {', '.join(PARAPHRASES)}")
        forget = self.forget_people(forget_frac)
        retain = self.retain_people(forget_frac)

        def items(names: Iterable[str]) -> tuple[Item, ...]:
            return tuple(i for n in names for a in ATTRIBUTES for i in self.questions(n, a, paraphrase))

        pct = f"{forget_frac * 100:.10g}"
        name = f"forget{pct}" if paraphrase == "all" else f"forget{pct}:{paraphrase}"
        return Target(
            name=name,
            forget=items(forget),
            retain=items(retain),
            holdout=items(p.name for p in self.holdout_people),
            forget_texts=tuple(b for n in forget for b in self._bios[n]),
            retain_texts=tuple(b for n in retain for b in self._bios[n]),
            meta={
                "source": "world",
                "world_seed": self.config.seed,
                "world_fingerprint": self.fingerprint(),
                "forget_frac": forget_frac,
                "paraphrase": paraphrase,
                "forget_people": forget,
            },
        )

    def unknown_items(self, paraphrase: str = "trained") -> list[Item]:
        """Questions about non-existent people, answered ``unknown``."""
        return [i for n in self.nonexistent for a in ATTRIBUTES for i in self.questions(n, a, paraphrase)]

    # ------------------------------------------------------------------ serialisation

    def to_json(self) -> str:
        """Canonical JSON of the config and everything generated (stable across runs)."""
        if self._json is None:
            def person_json(p: Person) -> dict:
                return {
                    "name": p.name,
                    "attributes": [[a, p[a]] for a in ATTRIBUTES],
                    "bios": list(self._bios[p.name]),
                    "paraphrased": [self.paraphrased_answers(p, a) for a in ATTRIBUTES],
                    "perturbed": [self.perturbed_answers(p, a) for a in ATTRIBUTES],
                }

            data = {
                "format": _JSON_FORMAT,
                "config": asdict(self.config),
                "employer_cities": [[e, self.employer_cities[e]] for e in pools.EMPLOYERS],
                "people": [person_json(p) for p in self.people],
                "holdout_people": [person_json(p) for p in self.holdout_people],
                "nonexistent": list(self.nonexistent),
                "forget_order": list(self._forget_order),
                "templates": [
                    [t.id, t.paraphrase, t.text] for a in ATTRIBUTES for t in question_templates(a, "all")
                ],
                "training_documents": [[s, t] for s, t in self._documents],
            }
            self._json = json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
        return self._json

    def fingerprint(self) -> str:
        """sha256 hex digest of :meth:`to_json` (a cache key for models trained on this world)."""
        return hashlib.sha256(self.to_json().encode("utf-8")).hexdigest()

    def __repr__(self) -> str:
        c = self.config
        return (
            f"World(seed={c.seed}, people={len(self.people)}, holdout={len(self.holdout_people)}, "
            f"nonexistent={len(self.nonexistent)})"
        )
