"""open-unlearning's TOFU_EVAL.json / TOFU_SUMMARY.json: written from a card's rows, read back, and
a file in their layout read into one frame (and one figure) with ours."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from mechunlearn.core.openunlearning import card_table, read_tofu_logs, write_tofu_logs
from mechunlearn.figures.study import split_bars

DATA = Path(__file__).resolve().parents[2] / "data" / "open_unlearning"


def card_rows() -> pd.DataFrame:
    """A hand-made card frame: two roles, aggregates and per-item rows."""
    rows = [
        {"model": "edited", "section": "tofu", "metric": "forget_truth_ratio", "split": "forget", "value": 0.75},
        {"model": "edited", "section": "tofu", "metric": "tofu_item", "of": "forget_truth_ratio", "split": "forget", "item": 0, "value": 0.5},
        {"model": "edited", "section": "tofu", "metric": "tofu_item", "of": "forget_truth_ratio", "split": "forget", "item": 1, "value": 1.0},
        {"model": "edited", "section": "tofu", "metric": "forget_Q_A_Prob", "split": "forget", "value": 0.25},
        {"model": "edited", "section": "tofu", "metric": "tofu_item", "of": "forget_Q_A_Prob", "split": "forget", "item": 0, "value": 0.25},
        {"model": "edited", "section": "tofu", "metric": "retain_utility", "split": "retain", "value": 0.5},
        {"model": "edited", "section": "tofu", "metric": "forget_quality", "split": "forget", "value": 0.01},
        {"model": "edited", "section": "mia", "metric": "mia_min_k", "attack": "min_k", "split": "forget_vs_holdout", "value": 0.8},
        {"model": "edited", "section": "mia", "metric": "mia_score", "attack": "min_k", "split": "forget", "item": 0, "value": -1.0},
        {"model": "edited", "section": "mia", "metric": "mia_score", "attack": "min_k", "split": "forget", "item": 1, "value": -2.0},
        {"model": "edited", "section": "mia", "metric": "mia_score", "attack": "min_k", "split": "holdout", "item": 0, "value": -3.0},
        {"model": "edited", "section": "mia", "metric": "privleak", "attack": "min_k", "split": "forget_vs_holdout", "value": -60.0},
        {"model": "retain", "section": "tofu", "metric": "forget_truth_ratio", "split": "forget", "value": 0.9},
    ]
    return pd.DataFrame(rows)


def test_write_uses_open_unlearnings_keys_and_layout(tmp_path):
    eval_path, summary_path = write_tofu_logs(card_rows(), tmp_path, model="edited")
    assert (eval_path.name, summary_path.name) == ("TOFU_EVAL.json", "TOFU_SUMMARY.json")
    logs = json.loads(eval_path.read_text())
    # retain_utility is our name, not theirs: left out; the retain role's rows too
    assert list(logs) == sorted(["forget_truth_ratio", "forget_Q_A_Prob", "forget_quality", "mia_min_k", "privleak"])
    assert logs["forget_truth_ratio"] == {"agg_value": 0.75, "value_by_index": {"0": {"score": 0.5}, "1": {"score": 1.0}}}
    prob = logs["forget_Q_A_Prob"]["value_by_index"]["0"]
    assert prob["prob"] == 0.25 and prob["avg_loss"] == pytest.approx(math.log(4))
    assert logs["forget_quality"] == {"agg_value": 0.01} and logs["privleak"] == {"agg_value": -60.0}
    # MIA: their scores are losses (our member-ness negated), AUC at the top and in agg_value
    mia = logs["mia_min_k"]
    assert mia["auc"] == mia["agg_value"] == 0.8
    assert mia["forget"] == {"agg_value": 1.5, "value_by_index": {"0": {"score": 1.0}, "1": {"score": 2.0}}}
    assert mia["holdout"]["value_by_index"] == {"0": {"score": 3.0}}
    assert json.loads(summary_path.read_text()) == {k: v["agg_value"] for k, v in logs.items()}
    with pytest.raises(ValueError, match="roles present"):
        write_tofu_logs(card_rows(), tmp_path, model="npo")


def test_round_trip_keeps_values_and_item_signs(tmp_path):
    eval_path, _ = write_tofu_logs(card_rows(), tmp_path / "ours")
    back = read_tofu_logs(eval_path, items=True)
    assert set(back["label"]) == {"ours"}
    agg = back[back["item"].isna()].set_index("metric")["value"]
    assert agg["forget_truth_ratio"] == 0.75 and agg["privleak"] == -60.0 and agg["mia_min_k"] == 0.8
    scores = back[back["metric"] == "mia_score"].sort_values(["split", "item"])["value"].tolist()
    assert scores == [-1.0, -2.0, -3.0]  # member-ness again
    items = back[(back["metric"] == "tofu_item") & (back["of"] == "forget_truth_ratio")]["value"].tolist()
    assert items == [0.5, 1.0]


def test_reads_their_eval_and_summary_files():
    summary = read_tofu_logs(DATA / "TOFU_SUMMARY.json", label="theirs").set_index("metric")
    assert summary.loc["model_utility", "value"] == 0.42 and summary.loc["model_utility", "split"] == "retain"
    assert summary.loc["privleak", "section"] == "mia" and summary.loc["forget_quality", "split"] == "forget"
    full = read_tofu_logs(DATA / "TOFU_EVAL.json", items=True)
    assert set(full["label"]) == {"open_unlearning"}  # the folder's name by default
    pert = full[(full["metric"] == "tofu_item") & (full["of"] == "forget_Q_A_PERT_Prob")].sort_values("item")["value"]
    assert pert.tolist() == pytest.approx([0.2, 0.1])  # several answers per item: their mean
    rouge = full[(full["metric"] == "tofu_item") & (full["of"] == "forget_Q_A_ROUGE")]["value"].tolist()
    assert rouge == [1.0, 0.0]  # rougeL_recall, the field forget_Q_A_ROUGE aggregates
    forget_scores = full[(full["metric"] == "mia_score") & (full["split"] == "forget")]["value"].tolist()
    assert forget_scores == [-1.0, -2.0]


def test_bad_files_get_clear_errors(tmp_path):
    (tmp_path / "a.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_tofu_logs(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable"):
        read_tofu_logs(tmp_path / "b.json")
    (tmp_path / "c.json").write_text('{"forget_quality": "high"}')
    with pytest.raises(ValueError, match="holds str"):
        read_tofu_logs(tmp_path / "c.json")


def test_their_run_and_ours_in_one_frame_and_one_figure():
    both = pd.concat([card_table(card_rows(), label="npo"), read_tofu_logs(DATA / "TOFU_SUMMARY.json", label="open-unlearning NPO")], ignore_index=True)
    fig = split_bars(both, metric="forget_truth_ratio", verifier=None)
    bars = [trace for trace in fig.data if trace.name == "forget"]
    assert list(bars[0].x) == ["npo:edited", "npo:retain", "open-unlearning NPO"]
    assert list(bars[0].y) == pytest.approx([0.75, 0.9, 0.55])
