"""Text templates of the synthetic world: bio sentences, questions, answer sentences.

Questions are *composed* from interchangeable parts so that a model can generalise to
phrasings it never saw: a shared prefix (``"Quiz:"``, ``"Tell me,"`` ...) times an
attribute-specific relation phrasing (with the name early or late), always closed by the same
answer cue ``"? Answer:"`` so the answer is the very next word. Every prefix and every
phrasing is seen in training; the held-out templates are the prefix x phrasing *combinations*
that never are (a diagonal of the grid, a different one per attribute).

Placeholders: ``{name}`` (a person's full name), ``{value}`` (an attribute value),
``{employer}`` / ``{city}`` (employer facts).
"""

from __future__ import annotations

from dataclasses import dataclass

ATTRIBUTES: tuple[str, ...] = (
    "birth_city",
    "birth_year",
    "university",
    "major",
    "employer",
    "work_city",
)
"""The six attributes of a person, in their fixed order."""

BIO_ATTRIBUTES: tuple[str, ...] = ATTRIBUTES[:5]
"""Attributes a bio states directly. ``work_city`` is left out on purpose: it follows from
the employer and the employer facts (a two-hop fact)."""

ANSWER_CUE = "? Answer:"
"""Every question ends with this cue; the answer follows after one space."""

QUESTION_PREFIXES: tuple[str, ...] = (
    "Question:",
    "Quiz:",
    "Tell me,",
    "I wonder,",
    "Please answer this:",
)
"""Prefixes shared by all attributes (the first part of a composed question)."""

QUESTION_PHRASINGS: dict[str, tuple[str, ...]] = {
    "birth_city": (
        "where was {name} born",
        "in which city was {name} born",
        "{name} was born in which city",
        "what is the birth city of {name}",
        "which city is the birthplace of {name}",
    ),
    "birth_year": (
        "when was {name} born",
        "in which year was {name} born",
        "{name} was born in which year",
        "what is the birth year of {name}",
        "which year is the year of birth of {name}",
    ),
    "university": (
        "where did {name} study",
        "which university did {name} attend",
        "{name} studied at which university",
        "what is the university of {name}",
        "which university is the alma mater of {name}",
    ),
    "major": (
        "what did {name} study",
        "which subject did {name} major in",
        "{name} majored in which subject",
        "what is the major of {name}",
        "which field is the major of {name}",
    ),
    "employer": (
        "who employs {name}",
        "which company does {name} work for",
        "{name} works for which company",
        "what is the employer of {name}",
        "which company is the employer of {name}",
    ),
    "work_city": (
        "in which city does {name} work",
        "where is the office of {name}",
        "{name} works in which city",
        "what is the work city of {name}",
        "which city is the workplace of {name}",
    ),
}
"""Relation phrasings per attribute (the second part of a composed question)."""

BIO_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_city": (
        "{name} was born in {value}.",
        "{name} is a native of {value}.",
        "The birthplace of {name} is {value}.",
        "{name} came into the world in the city of {value}.",
    ),
    "birth_year": (
        "{name} was born in the year {value}.",
        "The birth year of {name} is {value}.",
        "{name} first saw the light of day in {value}.",
        "{value} is the year when {name} was born.",
    ),
    "university": (
        "{name} studied at {value}.",
        "{name} graduated from {value}.",
        "{name} attended {value} as a student.",
        "The alma mater of {name} is {value}.",
    ),
    "major": (
        "{name} majored in {value}.",
        "{name} earned a degree in {value}.",
        "The major of {name} was {value}.",
        "{name} chose {value} as a field of study.",
    ),
    "employer": (
        "{name} works for {value}.",
        "{name} is employed by {value}.",
        "The employer of {name} is {value}.",
        "{name} has a job at {value}.",
    ),
}
"""Bio sentences per attribute; a bio picks one per attribute and shuffles their order."""

ANSWER_TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_city": (
        "{name} was born in the city of {value}.",
        "{value} is the birthplace of {name}.",
        "The city where {name} was born is {value}.",
    ),
    "birth_year": (
        "{name} was born in {value}.",
        "{value} is the birth year of {name}.",
        "The year when {name} was born is {value}.",
    ),
    "university": (
        "{name} went to university at {value}.",
        "{value} is the alma mater of {name}.",
        "The university of {name} is {value}.",
    ),
    "major": (
        "{name} studied {value}.",
        "{value} is the major of {name}.",
        "The field of study of {name} is {value}.",
    ),
    "employer": (
        "{name} is a member of the staff at {value}.",
        "{value} is the employer of {name}.",
        "The company of {name} is {value}.",
    ),
    "work_city": (
        "{name} works in the city of {value}.",
        "{value} is the work city of {name}.",
        "The city where {name} works is {value}.",
    ),
}
"""Full-sentence answers (TOFU-style paraphrased answers); perturbed answers reuse the first
wording with wrong values."""

EMPLOYER_FACT_TEMPLATES: tuple[str, ...] = (
    "{employer} is based in {city}.",
    "The headquarters of {employer} are in {city}.",
    "{employer} has its offices in {city}.",
    "{employer} is a company located in {city}.",
)
"""Sentences stating an employer's city (what makes ``work_city`` a learnable two-hop fact)."""


@dataclass(frozen=True)
class QuestionTemplate:
    """One composed question template: a prefix and a relation phrasing for one attribute."""

    id: str
    """Identifier such as ``birth_city:r2p4`` (phrasing 2, prefix 4)."""
    attribute: str
    """The attribute asked for."""
    phrasing: int
    """Index into :data:`QUESTION_PHRASINGS` of the attribute."""
    prefix: int
    """Index into :data:`QUESTION_PREFIXES`."""
    paraphrase: str
    """``trained`` (seen in training) or ``heldout`` (never seen as a whole)."""

    @property
    def text(self) -> str:
        """The template text with a ``{name}`` placeholder, ending in the answer cue."""
        prefix = QUESTION_PREFIXES[self.prefix]
        phrasing = QUESTION_PHRASINGS[self.attribute][self.phrasing]
        return f"{prefix} {phrasing}{ANSWER_CUE}"

    def render(self, name: str) -> str:
        """The question about ``name``, ending in the answer cue (no answer)."""
        return self.text.format(name=name)


def _is_heldout(attribute_index: int, phrasing: int, prefix: int) -> bool:
    # One held-out prefix per phrasing, a different diagonal per attribute, so every prefix
    # and every phrasing still appears in several trained combinations.
    return prefix == (phrasing + attribute_index) % len(QUESTION_PREFIXES)


def question_templates(attribute: str, paraphrase: str = "trained") -> tuple[QuestionTemplate, ...]:
    """The question templates of one attribute: ``trained``, ``heldout`` or ``all``."""
    if attribute not in QUESTION_PHRASINGS:
        raise ValueError(f"unknown attribute {attribute!r}; choose one of {', '.join(ATTRIBUTES)}")
    if paraphrase not in ("trained", "heldout", "all"):
        raise ValueError(f"unknown paraphrase {paraphrase!r}; choose 'trained', 'heldout' or 'all'")
    a = ATTRIBUTES.index(attribute)
    out = []
    for r in range(len(QUESTION_PHRASINGS[attribute])):
        for p in range(len(QUESTION_PREFIXES)):
            kind = "heldout" if _is_heldout(a, r, p) else "trained"
            if paraphrase in ("all", kind):
                out.append(QuestionTemplate(f"{attribute}:r{r}p{p}", attribute, r, p, kind))
    return tuple(out)


def all_template_texts() -> tuple[str, ...]:
    """Every template string of the world (used to build the tokenizer's vocabulary)."""
    texts: list[str] = list(QUESTION_PREFIXES) + [ANSWER_CUE]
    for attribute in ATTRIBUTES:
        texts.extend(QUESTION_PHRASINGS[attribute])
        texts.extend(ANSWER_TEMPLATES[attribute])
        texts.extend(BIO_TEMPLATES.get(attribute, ()))
    texts.extend(EMPLOYER_FACT_TEMPLATES)
    return tuple(texts)
