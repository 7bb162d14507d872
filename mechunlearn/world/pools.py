"""Fixed pools of invented names and attribute values for the synthetic world.

Every value is a single word (one token of the world's word-level tokenizer), so an answer
is scored by exact match of one greedy token. The names are invented so that no pretrained
knowledge about real people, places or companies can leak into the world's facts.

The pools are tuples (ordered, immutable): the world draws from them with a seeded
``random.Random`` and must never depend on set iteration order.
"""

from __future__ import annotations

FIRST_NAMES: tuple[str, ...] = (
    "Aurel", "Bexa", "Corin", "Dalvi", "Elno", "Fenna", "Garit", "Halse", "Ilvy", "Jorund",
    "Kesra", "Lunet", "Marek", "Nilsa", "Oswin", "Perra", "Quill", "Rovan", "Sefa", "Tamsin",
    "Ulric", "Vesna", "Wendo", "Xaver", "Yselle", "Zorin", "Ambra", "Brannoc",
)
"""Invented first names (28)."""

LAST_NAMES: tuple[str, ...] = (
    "Varnick", "Oskell", "Thorby", "Quenmore", "Dravis", "Pellow", "Ashgrove", "Kintry",
    "Morrow", "Halvard", "Brisket", "Tennick", "Vallow", "Crossley", "Edrin", "Fallowes",
    "Gundry", "Hesketh", "Ibbert", "Jessup", "Korvald", "Lindqvar", "Mayhew", "Norquist",
    "Orlet", "Penhale", "Rudder", "Stavely",
)
"""Invented last names (28); a full name is ``"<first> <last>"``."""

CITIES: tuple[str, ...] = (
    "Orvale", "Brenmoor", "Calverin", "Dunhollow", "Eskard", "Faldren", "Glimmer", "Harrowgate",
    "Istrane", "Jadmoor", "Kelvara", "Lorwick", "Mistral", "Norvale", "Ostrel", "Pyremont",
)
"""Invented cities (16): birth cities and employer cities share this pool."""

BIRTH_YEARS: tuple[str, ...] = tuple(str(year) for year in range(1950, 2000))
"""Birth years 1950-1999 (50), each one word such as ``"1974"``."""

UNIVERSITIES: tuple[str, ...] = (
    "Velmont", "Ashbury", "Corwen", "Dranfield", "Elmsworth", "Farrowby", "Grayhaven",
    "Hollins", "Ivybridge", "Kestrel", "Larchmont", "Marlowe",
)
"""Invented universities (12)."""

MAJORS: tuple[str, ...] = (
    "physics", "chemistry", "biology", "history", "economics", "philosophy", "linguistics",
    "geology", "astronomy", "mathematics", "architecture", "music",
)
"""Fields of study (12); ordinary words, since a major is not an identifying fact."""

EMPLOYERS: tuple[str, ...] = (
    "Zentrix", "Quorbel", "Altamira", "Brightloom", "Cobalux", "Duneware", "Everhold",
    "Fernwick", "Glowtide", "Heliodyne", "Irongate", "Juniperix", "Krelltech", "Lumivox",
    "Mossberg", "Nimbara",
)
"""Invented employers (16); each is based in one city of :data:`CITIES` (drawn per world)."""

UNKNOWN_ANSWER = "unknown"
"""The answer the model is trained to give about people who do not exist."""

VALUE_POOLS: dict[str, tuple[str, ...]] = {
    "birth_city": CITIES,
    "birth_year": BIRTH_YEARS,
    "university": UNIVERSITIES,
    "major": MAJORS,
    "employer": EMPLOYERS,
    "work_city": CITIES,
}
"""The pool each attribute's value comes from (``work_city`` is fixed by the employer)."""
