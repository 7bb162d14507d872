"""Figures of a study's results table (`mechunlearn.study.load_results`): DataFrame → Figure.

| function       | shows                                                                 |
| -------------- | --------------------------------------------------------------------- |
| `tradeoff`     | forget vs retain score of every run label, with the Pareto fronts     |
| `split_bars`   | one behaviour metric per method and split (panels per paraphrase set) |
| `sweep`        | a metric against one swept parameter, a line per method (and other swept values) |
| `run_times`    | seconds spent locating, editing and verifying, per method             |

Rows of failed runs are ignored; values are averaged over seeds (error bars: standard deviation).
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

TEMPLATE = "plotly_white"
PHASES = ("seconds_locate", "seconds_edit", "seconds_verify")


def metric_rows(frame: pd.DataFrame, metric: str, *, verifier: str | None = "behavior") -> pd.DataFrame:
    """Finished runs' split-level rows of one metric (no per-layer or per-item rows)."""
    _require(frame, ["status", "metric", "value", "label"])
    rows = frame[(frame["status"] == "ok") & (frame["metric"] == metric)]
    if verifier is not None and "verifier" in rows.columns:
        rows = rows[rows["verifier"] == verifier]
    if "layer" in rows.columns:
        rows = rows[rows["layer"].isna()]
    if "item" in rows.columns:
        rows = rows[rows["item"].isna()]
    if rows.empty:
        known = sorted(frame.loc[frame["status"] == "ok", "metric"].dropna().unique())
        raise ValueError(f"no finished rows with metric {metric!r}" + (f" from verifier {verifier!r}" if verifier else "") + f"; metrics present: {known}")
    return rows


def _by_label(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Mean and std over seeds per ``keys``."""
    stats = rows.groupby(keys, dropna=False, sort=False)["value"].agg(["mean", "std", "count"]).reset_index()
    stats["std"] = stats["std"].fillna(0.0)
    return stats


def _facets(rows: pd.DataFrame) -> list:
    return sorted(rows["paraphrase"].dropna().unique()) if "paraphrase" in rows.columns and rows["paraphrase"].notna().any() else [None]


def tradeoff_frame(
    frame: pd.DataFrame,
    *,
    metric: str = "exact_match",
    paraphrase: str | None = "trained",
    forget_split: str = "forget",
    retain_split: str = "retain",
    verifier: str = "behavior",
) -> pd.DataFrame:
    """One row per (model, target, method, label): mean ``forget`` and ``retain`` score over seeds
    (on ``paraphrase`` templates when the table has a paraphrase column)."""
    rows = metric_rows(frame, metric, verifier=verifier)
    if paraphrase is not None and "paraphrase" in rows.columns:
        rows = rows[rows["paraphrase"] == paraphrase]
        if rows.empty:
            raise ValueError(f"no {metric} rows on {paraphrase!r} templates")
    keys = ["model", "target", "method", "label"]
    wide = rows[rows["split"].isin([forget_split, retain_split])].pivot_table(index=keys, columns="split", values="value", aggfunc="mean", sort=False)
    missing = {forget_split, retain_split} - set(wide.columns)
    if missing:
        raise ValueError(f"no {metric} rows for split(s) {sorted(missing)}")
    return wide.rename(columns={forget_split: "forget", retain_split: "retain"})[["forget", "retain"]].dropna().reset_index()


def tradeoff(frame: pd.DataFrame, *, metric: str = "exact_match", paraphrase: str | None = "trained", verifier: str = "behavior") -> go.Figure:
    """Forget vs retain ``metric`` per run label (`weight_space.tradeoff`: each method's front
    dotted), plus the study-wide Pareto front dashed."""
    from mechunlearn.figures.weight_space import tradeoff as draw
    from mechunlearn.locate.slug import pareto_front

    points = tradeoff_frame(frame, metric=metric, paraphrase=paraphrase, verifier=verifier)
    fig = draw(points, label="label")
    front = points[pareto_front(points["retain"].to_numpy(), points["forget"].to_numpy())].sort_values("forget")
    fig.add_trace(go.Scatter(x=front["forget"], y=front["retain"], mode="lines", line=dict(color="#555", dash="dash"), name="Pareto front (all methods)", hoverinfo="skip"))
    on = f" on {paraphrase} templates" if paraphrase else ""
    fig.update_layout(template=TEMPLATE, title=f"Forget vs retain {metric}{on}", xaxis_title=f"forget {metric} (lower is better)", yaxis_title=f"retain {metric} (higher is better)", height=480)
    return fig


def split_bars(frame: pd.DataFrame, *, metric: str = "exact_match", verifier: str = "behavior") -> go.Figure:
    """Mean ``metric`` per method label and split; one panel per paraphrase set."""
    rows = metric_rows(frame, metric, verifier=verifier)
    facets = _facets(rows)
    fig = make_subplots(rows=1, cols=len(facets), subplot_titles=[f"{p} templates" if p else "" for p in facets], shared_yaxes=True)
    splits = [s for s in ("forget", "retain", "holdout") if s in set(rows["split"])] + sorted(set(rows["split"].dropna()) - {"forget", "retain", "holdout"})
    labels = list(dict.fromkeys(rows["label"]))
    for col, paraphrase in enumerate(facets, start=1):
        part = rows if paraphrase is None else rows[rows["paraphrase"] == paraphrase]
        stats = _by_label(part, ["label", "split"])
        for i, split in enumerate(splits):
            s = stats[stats["split"] == split].set_index("label").reindex(labels)
            fig.add_trace(
                go.Bar(x=labels, y=s["mean"], error_y=dict(array=s["std"], visible=bool(s["std"].fillna(0).any())), name=split, legendgroup=split, showlegend=col == 1, marker_color=_PALETTE[i % len(_PALETTE)]),
                row=1, col=col,
            )
    fig.update_yaxes(title_text=metric, row=1, col=1)
    fig.update_layout(template=TEMPLATE, barmode="group", title=f"{metric} per split", height=460)
    return fig


def sweep(
    frame: pd.DataFrame,
    param: str,
    *,
    metric: str = "exact_match",
    split: str = "forget",
    paraphrase: str | None = "trained",
    verifier: str = "behavior",
    by: tuple[str, ...] = (),
) -> go.Figure:
    """``metric`` on ``split`` against the swept parameter ``param``, mean ± sd over seeds; one
    line per method and value of each parameter in ``by`` (the method's other swept ones)."""
    rows = metric_rows(frame, metric, verifier=verifier)
    rows = rows[rows["split"] == split]
    if paraphrase is not None and "paraphrase" in rows.columns:
        rows = rows[rows["paraphrase"] == paraphrase]
    params = rows["params"].map(json.loads)
    values = params.map(lambda p: p.get(param))
    line = rows["method"].astype(str)
    for other in by:
        line = line + " " + other + "=" + params.map(lambda p, other=other: f"{p.get(other)}")
    rows = rows.assign(**{param: values, "line": line})[values.notna()]
    if rows.empty:
        raise ValueError(f"no finished runs have a parameter {param!r}")
    stats = _by_label(rows, ["line", param])
    fig = go.Figure()
    for i, (name, part) in enumerate(stats.groupby("line", sort=True)):
        part = part.sort_values(param)
        fig.add_trace(go.Scatter(x=part[param], y=part["mean"], error_y=dict(array=part["std"], visible=bool(part["std"].any())), mode="lines+markers", name=name, line=dict(color=_PALETTE[i % len(_PALETTE)])))
    on = f" ({paraphrase} templates)" if paraphrase and "paraphrase" in frame.columns else ""
    fig.update_layout(template=TEMPLATE, title=f"{split} {metric} against {param}{on}, mean ± sd over seeds", xaxis_title=param, yaxis_title=f"{split} {metric}", height=420)
    return fig


def swept_parameters(study: dict) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, parameter, the method's other swept parameters) for every swept parameter of a
    resolved study (``study.json``'s ``study``)."""
    out = []
    for method in study.get("methods", []):
        keys = list(method.get("sweep") or {})
        out += [(method["name"], key, tuple(k for k in keys if k != key)) for key in keys]
    return out


MAX_BARS = 40
"""Most bars `run_times` draws one per label; with more labels it draws one per method."""


def run_times(frame: pd.DataFrame) -> go.Figure:
    """Seconds spent per phase (locate, edit, verify) per method label, mean over seeds; with more
    than `MAX_BARS` labels, per method (mean over its runs), so a sweep's figure stays readable."""
    _require(frame, ["status", "metric", "value", "label"])
    rows = frame[(frame["status"] == "ok") & frame["metric"].isin(PHASES)]
    if "verifier" in rows.columns:
        rows = rows[rows["verifier"] == "runner"]
    if rows.empty:
        raise ValueError("no finished runs with timing rows (metrics seconds_locate / seconds_edit / seconds_verify)")
    n_labels = rows["label"].nunique()
    by = "label" if n_labels <= MAX_BARS or "method" not in rows.columns else "method"
    bars = list(dict.fromkeys(rows[by]))
    stats = rows.groupby([by, "metric"], sort=False)["value"].mean().unstack("metric").reindex(bars)
    fig = go.Figure()
    for i, phase in enumerate(PHASES):
        if phase in stats.columns:
            fig.add_trace(go.Bar(x=bars, y=stats[phase], name=phase.removeprefix("seconds_"), marker_color=_PALETTE[i]))
    title = "Wall time per run" if by == "label" else f"Wall time per run, mean per method ({n_labels} labels)"
    fig.update_layout(template=TEMPLATE, barmode="stack", title=title, yaxis_title="seconds", height=400)
    return fig


def _require(frame: pd.DataFrame, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"expected a study results table; columns {missing} are missing (have {list(frame.columns)})")


_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
