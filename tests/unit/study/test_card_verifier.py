"""The study card verifier: its per-section settings (`probes`, `attacks`, `mia`, `tofu` dicts) become the
verifiers' configs, with errors that name what to fix."""

from __future__ import annotations

import pytest

from mechunlearn.study.builtins import _sub_config
from mechunlearn.verify.attacks import AttackConfig
from mechunlearn.verify.tofu import TofuConfig


def test_section_settings_become_the_config_with_lists_as_tuples():
    attacks = _sub_config(AttackConfig, {"max_items": 300, "quant_bits": [8]}, "attacks", relearn_steps=5)
    assert (attacks.max_items, attacks.quant_bits, attacks.relearn_steps) == (300, (8,), 5)
    assert _sub_config(TofuConfig, {"max_qa_items": 200}, "tofu").max_qa_items == 200


def test_unknown_or_doubly_given_settings_are_named():
    with pytest.raises(ValueError, match=r"unknown tofu settings \['max_items'\].*max_qa_items"):
        _sub_config(TofuConfig, {"max_items": 3}, "tofu")
    with pytest.raises(ValueError, match=r"unknown attacks settings \['relearn_steps'\]"):  # the card's own key
        _sub_config(AttackConfig, {"relearn_steps": 3}, "attacks", relearn_steps=5)


def test_the_probe_heatmap_draws_the_position_the_study_probed():
    """The demo probes the question's last token only: the report's heatmap draws it (it used to
    ask for the subject position and fail)."""
    import pandas as pd

    from mechunlearn.study.builtins import _probe_heatmap

    rows = pd.DataFrame(
        [{"metric": "probe_acc", "role": role, "position": "question", "split": "forget", "reading": "refit", "attribute": a, "layer": layer, "value": v, "label": "ga"}
         for role, v in (("edited", 0.2), ("original", 0.9), ("retain", 0.1)) for a in ("city", "employer") for layer in (0, 1)]
    )
    fig = _probe_heatmap(rows)
    drawn = {a.text: t.z.tolist() for a, t in zip(fig.layout.annotations, fig.data)}  # subplot title: role
    assert drawn == {"edited": [[0.2, 0.2], [0.2, 0.2]], "original": [[0.9, 0.9], [0.9, 0.9]], "retain": [[0.1, 0.1], [0.1, 0.1]]}
    assert "question token" in fig.layout.title.text
