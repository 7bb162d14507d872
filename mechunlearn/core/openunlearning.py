"""Results in and out in open-unlearning's format: ``TOFU_EVAL.json`` and ``TOFU_SUMMARY.json``.

open-unlearning's evaluator (``src/evals/base.py:19-112``) writes two files per run:

- ``TOFU_EVAL.json``: ``{metric: {"agg_value": number, "value_by_index": {index: {...}}}}``,
  keys sorted; the per-item fields are ``prob`` and ``avg_loss`` (``*_Q_A_Prob``),
  ``rougeL_recall`` (``*_Q_A_ROUGE``), ``score`` (truth ratios, ``exact_memorization``,
  ``extraction_strength``); an MIA metric holds ``forget`` and ``holdout`` sub-results (each with
  ``agg_value`` and per-item ``score``, signed as losses: higher = less likely a member) and
  ``auc`` (``src/evals/metrics/mia/utils.py:54-70``); ``forget_quality`` and ``privleak`` only
  ``agg_value``.
- ``TOFU_SUMMARY.json``: ``{metric: agg_value}``.

`write_tofu_logs` writes one model role of a card (or of `tofu_metrics` /
`membership_inference`) in that layout, for the metrics that carry open-unlearning's names
(`OPEN_UNLEARNING_METRICS`); per-item values come from the ``tofu_item`` and ``mia_score`` rows
(``CardConfig.keep_scores``). Item indices are positions in the items scored here, not TOFU's
data-set indices. `read_tofu_logs` reads either file back into our long table (one row per
metric, and with ``items=True`` one per item), labelled so that `card_table` frames and
open-unlearning runs stack into one frame that `mechunlearn.figures.split_bars` draws.

>>> write_tofu_logs(card, "runs/npo", model="edited")
>>> both = pd.concat([card_table(card), read_tofu_logs("their_run/TOFU_SUMMARY.json", label="NPO (open-unlearning)")])
>>> figures.split_bars(both, metric="forget_truth_ratio", verifier=None)
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd

from mechunlearn.core.result import Result, atomic_write_text

EVAL_FILE = "TOFU_EVAL.json"
SUMMARY_FILE = "TOFU_SUMMARY.json"

OPEN_UNLEARNING_METRICS = (
    "exact_memorization", "extraction_strength", "forget_Q_A_PARA_Prob", "forget_Q_A_PARA_ROUGE", "forget_Q_A_PERT_Prob",
    "forget_Q_A_PERT_ROUGE", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "forget_Q_A_gibberish", "forget_truth_ratio", "forget_quality",
    "mia_gradnorm", "mia_loss", "mia_min_k", "mia_min_k_plus_plus", "mia_reference", "mia_zlib", "model_utility", "privleak",
    "ra_Q_A_PERT_Prob", "ra_Q_A_Prob", "ra_Q_A_Prob_normalised", "ra_Q_A_ROUGE", "ra_Truth_Ratio", "retain_Q_A_PARA_Prob",
    "retain_Q_A_PERT_Prob", "retain_Q_A_Prob", "retain_Q_A_ROUGE", "retain_Truth_Ratio", "wf_Q_A_PERT_Prob", "wf_Q_A_Prob",
    "wf_Q_A_Prob_normalised", "wf_Q_A_ROUGE", "wf_Truth_Ratio",
)  # fmt: skip
"""The TOFU metric keys of open-unlearning (``configs/eval/tofu_metrics/*.yaml``, their ``@package`` names)."""


def _item_field(metric: str) -> str:
    """The per-item field open-unlearning stores for ``metric``."""
    if metric.endswith("_Prob") or metric.endswith("_Prob_normalised"):
        return "prob"
    if metric.endswith("_ROUGE"):
        return "rougeL_recall"
    return "score"


def _split(metric: str) -> str:
    if metric.startswith("mia_") or metric.startswith("privleak"):
        return "forget_vs_holdout"
    if metric.startswith("ra_"):
        return "real_authors"
    if metric.startswith("wf_"):
        return "world_facts"
    if metric.startswith("retain") or metric == "model_utility":
        return "retain"
    return "forget"


def to_tofu_logs(result: Result | pd.DataFrame, *, model: str = "edited") -> dict:
    """The ``TOFU_EVAL.json`` dictionary of one model role's open-unlearning-named metrics."""
    frame = result.frame if isinstance(result, Result) else result
    if "model" not in frame.columns or model not in set(frame["model"].dropna()):
        known = sorted(frame["model"].dropna().unique()) if "model" in frame.columns else []
        raise ValueError(f"no rows of model role {model!r}; roles present: {known}")
    rows = frame[frame["model"] == model]
    aggregate = rows[rows["metric"].isin(OPEN_UNLEARNING_METRICS)]
    if "item" in aggregate.columns:
        aggregate = aggregate[aggregate["item"].isna()]
    if aggregate.empty:
        raise ValueError(f"model role {model!r} has none of open-unlearning's metrics (run the card's tofu or mia section)")
    logs: dict[str, dict] = {}
    for metric, group in aggregate.groupby("metric", sort=True):
        if len(group) != 1:
            raise ValueError(f"{len(group)} rows of {metric!r} for model {model!r}; expected one (one card per file)")
        value = float(group["value"].iloc[0])
        entry: dict = {"agg_value": value}
        if metric.startswith("mia_"):
            entry["auc"] = value
            scores = rows[(rows["metric"] == "mia_score") & (rows.get("attack") == metric[len("mia_") :])]
            for split in ("forget", "holdout"):
                part = scores[scores["split"] == split]
                if not part.empty:  # open-unlearning's scores are losses: our member-ness negated
                    by_index = {str(int(i)): {"score": -float(v)} for i, v in zip(part["item"], part["value"])}
                    entry[split] = {"agg_value": -float(part["value"].mean()), "value_by_index": by_index}
        elif metric not in ("forget_quality", "privleak", "model_utility"):
            items = rows[(rows["metric"] == "tofu_item") & (rows.get("of") == metric)] if "of" in rows.columns else rows.iloc[0:0]
            field = _item_field(metric)
            by_index = {}
            for i, v in zip(items["item"], items["value"]):
                by_index[str(int(i))] = {"prob": float(v), "avg_loss": -math.log(v) if v > 0 else math.inf} if field == "prob" else {field: float(v)}
            entry["value_by_index"] = by_index
        logs[metric] = entry
    return logs


def write_tofu_logs(result: Result | pd.DataFrame, folder: str | os.PathLike, *, model: str = "edited") -> tuple[Path, Path]:
    """Write ``TOFU_EVAL.json`` and ``TOFU_SUMMARY.json`` of one model role into ``folder``
    (atomically; keys sorted, 4-space indent, as open-unlearning writes them)."""
    logs = to_tofu_logs(result, model=model)
    folder = Path(folder)
    eval_path, summary_path = folder / EVAL_FILE, folder / SUMMARY_FILE
    atomic_write_text(eval_path, json.dumps(logs, indent=4, sort_keys=True))
    atomic_write_text(summary_path, json.dumps({k: v["agg_value"] for k, v in logs.items()}, indent=4, sort_keys=True))
    return eval_path, summary_path


def read_tofu_logs(path: str | os.PathLike, *, label: str | None = None, items: bool = False) -> pd.DataFrame:
    """A ``TOFU_EVAL.json`` or ``TOFU_SUMMARY.json`` as our long table: columns ``label`` (default:
    the file's folder name), ``model`` (= label), ``section`` (``tofu`` / ``mia``), ``metric``,
    ``split``, ``value``, ``source`` (``open-unlearning``), ``status`` (``ok``). With ``items``
    (an EVAL file), also the per-item rows (``tofu_item`` with ``of``; ``mia_score`` with
    ``attack``, in our member-ness sign)."""
    path = Path(path)
    try:
        logs = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as why:
        raise ValueError(f"{path}: not a readable open-unlearning log ({why})") from None
    if not isinstance(logs, dict) or not logs:
        raise ValueError(f"{path}: expected a JSON object of metrics (TOFU_EVAL.json or TOFU_SUMMARY.json)")
    label = label or path.resolve().parent.name
    rows: list[dict] = []
    for metric, entry in logs.items():
        if isinstance(entry, dict):
            value = entry.get("agg_value")
        elif isinstance(entry, (int, float)) or entry is None:
            value, entry = entry, {}
        else:
            raise ValueError(f"{path}: metric {metric!r} holds {type(entry).__name__}, expected a number or an object with 'agg_value'")
        section = "mia" if metric.startswith("mia_") or metric.startswith("privleak") else "tofu"
        base = {"label": label, "model": label, "section": section, "source": "open-unlearning", "status": "ok"}
        if value is not None:
            rows.append({**base, "metric": metric, "split": _split(metric), "value": float(value)})
        if not items:
            continue
        if metric.startswith("mia_"):
            for split in ("forget", "holdout"):
                for i, v in (entry.get(split) or {}).get("value_by_index", {}).items():
                    rows.append({**base, "metric": "mia_score", "attack": metric[len("mia_") :], "split": split, "item": int(i), "value": -float(v["score"])})
        else:
            field = _item_field(metric)
            for i, v in (entry.get("value_by_index") or {}).items():
                got = v.get(field) if isinstance(v, dict) else None
                if isinstance(got, list):  # several answers per item: open-unlearning averages them
                    got = sum(got) / len(got)
                if got is not None:
                    rows.append({**base, "metric": "tofu_item", "of": metric, "split": _split(metric), "item": int(i), "value": float(got)})
    if not rows:
        raise ValueError(f"{path}: no metric values in it")
    return pd.DataFrame(rows)


def card_table(result: Result | pd.DataFrame, *, label: str | None = None) -> pd.DataFrame:
    """A card's rows in the layout of `read_tofu_logs` (``label`` = the model role, or
    ``"{label}:{role}"``; ``source`` = ``mechunlearn``; ``status`` = ``ok``), to stack with them."""
    frame = (result.frame if isinstance(result, Result) else result).copy()
    if "model" not in frame.columns:
        raise ValueError("expected a card (or verifier) frame with a 'model' column")
    frame["label"] = frame["model"] if label is None else label + ":" + frame["model"].astype(str)
    frame["source"] = "mechunlearn"
    frame["status"] = "ok"
    return frame
