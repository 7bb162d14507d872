"""Figures of the verification suite: DataFrame (a card's or a verifier's ``frame``) → plotly Figure.

Every function takes the long table, filters what it needs, and returns a `plotly` Figure
(never shows it):

| function            | draws                                                              |
| ------------------- | ------------------------------------------------------------------ |
| `probe_heatmap`     | probe accuracy, layer × attribute, one facet per model role        |
| `relearning_curves` | exact match over relearning steps, per model role and half          |
| `mia_roc`           | membership-inference ROC curves (forget vs holdout) per model role  |
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from mechunlearn.verify.mia import auc, roc_curve

ROLE_ORDER = ("original", "edited", "retain")


def _frame(data) -> pd.DataFrame:
    frame = getattr(data, "frame", data)
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a DataFrame or a Result, got {type(data).__name__}")
    return frame


def _need(frame: pd.DataFrame, metric: str | Sequence[str], what: str) -> pd.DataFrame:
    metrics = [metric] if isinstance(metric, str) else list(metric)
    sub = frame[frame["metric"].isin(metrics)]
    if sub.empty:
        raise ValueError(f"{what} needs rows with metric {metrics}; the table has {sorted(frame['metric'].dropna().unique())[:12]}")
    return sub


def _roles(values) -> list[str]:
    present = list(dict.fromkeys(values))
    return [r for r in ROLE_ORDER if r in present] + [r for r in present if r not in ROLE_ORDER]


def probe_heatmap(data, *, position: str = "subject", split: str = "forget", reading: str = "refit", title: str | None = None) -> go.Figure:
    """Probe accuracy (layer × attribute) per model role: does the edited model still encode
    what the retain model never knew?"""
    f = _need(_frame(data), "probe_acc", "probe_heatmap")
    f = f[(f["position"] == position) & (f["split"] == split) & (f["reading"] == reading)]
    if f.empty:
        raise ValueError(f"no probe rows for position={position!r}, split={split!r}, reading={reading!r}")
    roles = _roles(f["model"])
    attributes = list(dict.fromkeys(f["attribute"]))
    layers = sorted(f["layer"].unique())
    fig = make_subplots(rows=1, cols=len(roles), subplot_titles=roles, shared_yaxes=True, horizontal_spacing=0.03)
    for i, role in enumerate(roles):
        grid = f[f["model"] == role].pivot_table(index="layer", columns="attribute", values="value").reindex(index=layers, columns=attributes)
        fig.add_trace(
            go.Heatmap(z=grid.values, x=attributes, y=[str(l) for l in layers], zmin=0, zmax=1, colorscale="Viridis", showscale=i == len(roles) - 1, text=np.round(grid.values, 2), texttemplate="%{text}", colorbar={"title": "accuracy"}),
            row=1, col=i + 1,
        )
    fig.update_yaxes(title_text="layer", col=1)
    fig.update_layout(title=title or f"probe accuracy on {split} people ({position} token, {reading})", height=320 + 25 * len(layers))
    return fig


def relearning_curves(data, *, metric: str = "relearn_exact_match", title: str | None = None) -> go.Figure:
    """Exact match (or probability) over relearning steps; solid: the unseen half, dashed: the relearned half."""
    f = _need(_frame(data), metric, "relearning_curves").copy()
    f["half"] = f["half"].map({"other": "unseen half", "trained": "relearned half"}).fillna(f["half"])
    fig = px.line(f.sort_values("step"), x="step", y="value", color="model", line_dash="half", markers=True, category_orders={"model": _roles(f["model"]), "half": ["unseen half", "relearned half"]})
    fig.update_layout(title=title or "relearning on half of the forget set", yaxis_title=metric, yaxis_range=[0, 1.02])
    return fig


def mia_roc(data, *, attack: str = "min_k", title: str | None = None) -> go.Figure:
    """ROC curves of one membership-inference attack (forget = members, holdout = non-members)
    from per-item ``mia_score`` rows (``membership_inference(..., keep_scores=True)``)."""
    f = _need(_frame(data), "mia_score", "mia_roc")
    f = f[f["attack"] == attack]
    if f.empty:
        raise ValueError(f"no mia_score rows for attack {attack!r}")
    fig = go.Figure()
    for role in _roles(f["model"]):
        sub = f[f["model"] == role]
        pos, neg = sub[sub["split"] == "forget"]["value"], sub[sub["split"] == "holdout"]["value"]
        roc = roc_curve(pos, neg)
        fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=f"{role} (AUC {auc(pos, neg):.2f})"))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dot", "color": "grey"}, name="chance", showlegend=False))
    fig.update_layout(title=title or f"membership inference ({attack}): forget vs holdout", xaxis_title="false positive rate", yaxis_title="true positive rate", width=560, height=480)
    return fig
