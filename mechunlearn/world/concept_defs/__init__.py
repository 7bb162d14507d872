"""Hand-written concept definitions, one data module per model; `definitions(model_id)` builds the `ConceptSet`.

The located files in ``concept_vectors/`` are generated from these by
`mechunlearn.locate.concept_vectors.build_concept_file`.
"""

from __future__ import annotations

import importlib
from typing import Sequence

from mechunlearn.world.concepts import Concept, ConceptSet
from mechunlearn.world.target import Item

MODULES = {"smollm2-135m": "smollm2_135m", "gemma-3-270m": "gemma3_270m"}
"""Model id → data module in this package."""


def definitions(model_id: str, *, n_generic: int = 6, n_other: int = 4) -> ConceptSet:
    """The hand-written (unlocated) `ConceptSet` for a model, with each concept's unrelated questions
    (see `unrelated_for`)."""
    if model_id not in MODULES:
        raise KeyError(f"no hand-written concepts for {model_id!r}; available: {', '.join(MODULES)}")
    data = importlib.import_module(f"{__name__}.{MODULES[model_id]}")
    raw = data.CONCEPTS
    concepts = []
    for name, (category, words, questions, texts) in raw.items():
        concepts.append(
            Concept(
                name=name,
                category=category,
                reference_words=tuple(words),
                questions=tuple(Item(p, a, subject=name, attribute="concept", template="concept") for p, a in questions),
                unrelated=unrelated_for(name, raw, data.UNRELATED, n_generic=n_generic, n_other=n_other),
                texts=tuple(texts),
            )
        )
    return ConceptSet(model_id=data.MODEL_ID, concepts=tuple(concepts), meta={"source": f"{__name__}.{MODULES[model_id]}"})


def unrelated_for(
    name: str,
    concepts: dict,
    generic: Sequence[tuple[str, str]],
    *,
    n_generic: int = 6,
    n_other: int = 4,
) -> tuple[Item, ...]:
    """Control questions for one concept, chosen deterministically:

    * ``n_generic`` generic questions, a window of the pool that shifts with the concept's position;
    * the first question of each of the next ``n_other`` concepts (in file order, wrapping) that
      have another category and mention none of this concept's reference words (so ``France``
      never gets "The Eiffel Tower is in … Paris" as a control).
    """
    names = list(concepts)
    if name not in concepts:
        raise KeyError(f"unknown concept {name!r}")
    pos = names.index(name)
    category, words, _, _ = concepts[name]
    mine = {w.lower() for w in words}
    picked = [
        Item(p, a, subject="generic", attribute="unrelated", template="generic")
        for p, a in (generic[(pos * 3 + j) % len(generic)] for j in range(min(n_generic, len(generic))))
    ]
    others = 0
    for step in range(1, len(names)):
        other = names[(pos + step) % len(names)]
        o_category, o_words, o_questions, _ = concepts[other]
        prompt, answer = o_questions[0]
        text_words = set(f"{prompt} {answer}".lower().replace(",", " ").replace(".", " ").split())
        if o_category == category or text_words & mine or {w.lower() for w in o_words} & mine:
            continue
        picked.append(Item(prompt, answer, subject=other, attribute="unrelated", template="other_concept"))
        others += 1
        if others == n_other:
            break
    return tuple(picked)


def world_concepts(
    world,
    model_id: str = "bios-tiny",
    *,
    attributes: Sequence[str] = ("birth_city", "employer"),
    n_questions: int = 8,
    n_unrelated: int = 10,
    n_texts: int = 4,
) -> ConceptSet:
    """Concepts of a synthetic `World` (for bios-tiny): one per value of each attribute (each city,
    each employer), chosen deterministically.

    Questions: the first trained question about each of up to ``n_questions`` people with that
    value; unrelated: ``birth_year`` / ``major`` questions about people without it; texts: bios of
    the people with it; reference word: the value itself.
    """
    from mechunlearn.world.target import Item as _Item

    people = sorted(world.people, key=lambda p: p.name)
    concepts = []
    for attribute in attributes:
        for value in sorted({p[attribute] for p in people}):
            having = [p for p in people if p[attribute] == value]
            others = [p for p in people if p[attribute] != value and value not in " ".join(world.bios(p)[:1])]
            questions = tuple(
                _Item(q.prompt, q.answer, subject=f"{attribute}:{value}", attribute="concept", template=q.template)
                for p in having[:n_questions]
                for q in world.questions(p, attribute)[:1]
            )
            unrelated = tuple(
                _Item(q.prompt, q.answer, subject=p.name, attribute="unrelated", template=q.template)
                for j, p in enumerate(others[:n_unrelated])
                for q in world.questions(p, ("birth_year", "major")[j % 2])[:1]
            )
            texts = tuple(world.bios(p)[0] for p in having[:n_texts])
            concepts.append(
                Concept(
                    name=f"{attribute}:{value}",
                    category=attribute,
                    reference_words=(value,),
                    questions=questions,
                    unrelated=unrelated,
                    texts=texts,
                )
            )
    return ConceptSet(model_id=model_id, concepts=tuple(concepts), meta={"source": "world", "world": world.fingerprint(), "attributes": list(attributes)})


def concepts_for(model) -> ConceptSet:
    """The concept definitions for a loaded model: its world's concepts if it was trained on a
    `World` (bios-tiny), otherwise the hand-written definitions of its model id."""
    world_config = getattr(model, "meta", {}).get("world_config")
    if world_config is not None:
        from mechunlearn.world.world import World

        return world_concepts(World(world_config), model.model_id)
    return definitions(model.model_id)
