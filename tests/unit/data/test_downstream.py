"""What file targets feed downstream: truth items, reintroduction from ``context``, and the card
sections and attacks that are skipped (with a reason) when the data lacks a field."""

from __future__ import annotations

from pathlib import Path

import pytest

from mechunlearn.data import load_target
from mechunlearn.verify.attacks import AttackConfig, attack_needs, reintroduction_items
from mechunlearn.verify.card import SECTIONS, CardConfig, section_needs
from mechunlearn.verify.tofu import truth_items

DATA = Path(__file__).resolve().parents[2] / "data"


def test_truth_items_come_from_the_records():
    t = load_target(DATA / "tofu")
    items = truth_items(t.forget)
    assert [i.prompt for i in items] == ["Which city is the capital of France?", "Which city is the capital of Japan?", "Which city is the capital of Egypt?"]
    assert items[1].paraphrased == ("Japan's capital is Tokyo.",)
    assert items[1].perturbed == ("Japan's capital is Osaka.", "Japan's capital is Kyoto.", "Japan's capital is Nagoya.")
    with pytest.raises(ValueError, match="truth ratio needs both"):
        truth_items(t.holdout)


def test_reintroduction_puts_the_context_before_the_question():
    t = load_target(DATA / "qa.jsonl")
    with_ctx, without = reintroduction_items(t, "direct")
    assert [i.prompt for i in with_ctx] == ["Paris is the capital of France. The capital of France is", "Tokyo is the capital of Japan. The capital of Japan is"]
    assert [i.prompt for i in without] == ["The capital of France is", "The capital of Japan is"]
    with pytest.raises(ValueError, match="no forget items with a context that does not state the answer"):
        reintroduction_items(t, "two_hop")


def test_sections_and_attacks_a_file_lacks_are_named():
    config = CardConfig()
    tofu, choice, qa, corpus = (load_target(DATA / p) for p in ("tofu", "choice.jsonl", "qa.csv", "corpus"))
    assert {s: section_needs(s, tofu, config) is None for s in SECTIONS} == {
        "behavior": True, "choice": False, "probes": False, "weights": True, "activations": True, "attacks": True, "mia": True, "tofu": True, "depth": True}
    assert "needs the retain model" in section_needs("depth", tofu, config, has_oracle=False)
    assert "subject, attribute columns" in section_needs("probes", tofu, config)
    assert "holdout items" in section_needs("mia", choice, config)
    assert "paraphrased_answer, perturbed_answers columns" in section_needs("tofu", qa, config)
    assert section_needs("choice", choice, config) is None
    assert [s for s in SECTIONS if section_needs(s, corpus, config) is None] == ["weights"]
    assert attack_needs(tofu, "paraphrase") is None  # TOFU's paraphrased_question
    assert "context column" in attack_needs(tofu, "reintroduce")
    assert "few_shot_shots='any'" in attack_needs(tofu, "few_shot")
    assert attack_needs(tofu, "few_shot", AttackConfig(few_shot_shots="any")) is None
    assert "relearn_split='item'" in attack_needs(tofu, "relearn")
    assert attack_needs(tofu, "relearn", AttackConfig(relearn_split="item")) is None
    assert attack_needs(load_target(DATA / "qa.jsonl"), "reintroduce") is None


def test_card_summary_of_a_card_without_probes_or_attacks():
    import pandas as pd

    from mechunlearn.core.result import Result
    from mechunlearn.verify.card import card_summary

    frame = pd.DataFrame([{"section": "behavior", "model": "original", "metric": "exact_match", "split": "forget", "value": 0.5}])
    assert card_summary(Result(frame)).loc["original", "exact_match:forget"] == 0.5
