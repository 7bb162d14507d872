"""The report's verdict table reads each run's card against the retain run (the oracle)."""

import pandas as pd

from mechunlearn.study.report import verdict_table


def rows(label, forget_em, probe, relearned):
    base = {"status": "ok", "model": "bios-tiny", "target": "world", "label": label}
    return [
        {**base, "verifier": "behavior", "metric": "exact_match", "split": "forget", "paraphrase": "trained", "value": forget_em},
        {**base, "verifier": "behavior", "metric": "exact_match", "split": "forget", "paraphrase": "heldout", "value": 0.9},  # not read
        {**base, "verifier": "card", "section": "probes", "role": "edited", "metric": "probe_acc", "split": "forget", "reading": "refit", "attribute": "city", "value": probe},
        {**base, "verifier": "card", "section": "attacks", "role": "edited", "metric": "relearn_exact_match", "split": "forget", "half": "other", "step": 10, "value": relearned},
        {**base, "verifier": "card", "section": "attacks", "role": "edited", "metric": "relearn_exact_match", "split": "forget", "half": "other", "step": 0, "value": 0.0},
    ]


def test_every_edited_run_gets_a_verdict_against_the_retain_run():
    frame = pd.DataFrame(rows("none", 1.0, 0.5, 1.0) + rows("retain", 0.0, 0.1, 0.05) + rows("ga", 0.0, 0.12, 0.6) + rows("wagle", 0.05, 0.12, 0.06) + rows("weak", 0.5, 0.3, 0.9))
    v = verdict_table(frame).set_index("label")
    assert list(v.index) == ["ga", "wagle", "weak"]
    assert v["verdict"].to_dict() == {"ga": "hidden", "wagle": "removed", "weak": "not forgotten"}
    assert "relearning 0.600 > 0.100" in v.loc["ga", "evidence"] and "behaviour 0.000 ≤ 0.100" in v.loc["ga", "evidence"]


def test_a_study_without_a_card_has_no_verdicts():
    frame = pd.DataFrame([r for r in rows("ga", 0.0, 0.1, 0.1) if r["verifier"] == "behavior"])
    assert verdict_table(frame).empty
