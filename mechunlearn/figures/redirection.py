"""Figures of activation-redirection and fact-lookup methods: LUNAR's steering sweep (Shen et al.
2025), the activation shift at the edit site, and per-layer probe accuracy with the fact-lookup
layers marked (Guo et al. 2024). Every function takes a tidy DataFrame and returns a plotly
`Figure` (never ``.show()``).

| function            | input frame (columns)                                                   |
| ------------------- | ----------------------------------------------------------------------- |
| `steering_sweep`    | layer, mode, split, metric, value [, coef]  (`locate.lunar.steering_sweep`) |
| `activation_shift`  | split, shift_norm [, shift_along]  (`locate.lunar.activation_shift`)      |
| `probe_layers`      | layer, value [, split, attribute]  (`locate.fact_lookup.layer_probe_profile`) |
| `tradeoff_curve`    | forget, retain [, label, method]  (one row per setting of a sweep)      |
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mechunlearn.figures import need_columns


def steering_sweep(frame: pd.DataFrame, *, coef: float | None = None, metrics: Sequence[str] = ("share_unknown", "share_correct")) -> go.Figure:
    """Share of answers per class against the layer: one panel per mode (steering hook, fitted
    edit), colour = class, dash = split. The unedited model's forget/retain ``share_correct`` are
    dotted horizontal lines. ``coef`` picks one coefficient (default: the largest)."""
    need_columns(frame, ["layer", "mode", "split", "metric", "value"], "steering_sweep")
    sub = frame[frame["metric"].isin(metrics)]
    if "coef" in sub.columns:
        steered = sub[sub["mode"] != "none"]
        pick = coef if coef is not None else float(steered["coef"].max())
        sub = sub[(sub["mode"] == "none") | (sub["coef"] == pick)]
    base = sub[sub["mode"] == "none"]
    sub = sub[sub["mode"] != "none"].sort_values("layer")
    if sub.empty:
        raise ValueError("steering_sweep: no steered rows to plot")
    fig = px.line(sub, x="layer", y="value", color="metric", line_dash="split", facet_col="mode", markers=True,
                  labels={"value": "share of answers", "layer": "layer l"})
    for _, row in base[base["metric"] == "share_correct"].iterrows():
        fig.add_hline(y=row["value"], line_dash="dot", line_color="grey", annotation_text=f"unedited {row['split']} correct", annotation_position="bottom right")
    title = "LUNAR steering sweep: add c·r_l at blocks.l.hook_resid_post"
    if "coef" in frame.columns:
        title += f" (c = {pick:g})"
    fig.update_layout(title=title, yaxis_range=[-0.02, 1.02])
    fig.update_xaxes(dtick=1)
    return fig


def activation_shift(frame: pd.DataFrame, *, measure: str = "shift_along") -> go.Figure:
    """Histogram of the edit's change of the MLP output at the edit site, per split (forget rows
    should move along r, retain rows stay near 0). ``measure``: ``shift_along`` (projection on the
    unit direction) or ``shift_norm``; ``relative`` divides the norm by the unedited output's."""
    need_columns(frame, ["split", "shift_norm"], "activation_shift")
    data = frame.copy()
    if measure == "relative":
        need_columns(frame, ["base_norm"], "activation_shift(measure='relative')")
        data["relative"] = data["shift_norm"] / data["base_norm"].clip(lower=1e-12)
    elif measure not in data.columns:
        raise ValueError(f"measure must be shift_along, shift_norm or relative; the frame has {list(frame.columns)}")
    if data[measure].isna().all():
        raise ValueError(f"activation_shift: column {measure!r} is all NaN (no direction given?)")
    layer = f" at layer {int(data['layer'].iloc[0])}" if "layer" in data.columns else ""
    labels = {"shift_along": "Δ mlp_out · r̂", "shift_norm": "‖Δ mlp_out‖", "relative": "‖Δ mlp_out‖ / ‖mlp_out‖"}
    fig = px.histogram(data, x=measure, color="split", barmode="overlay", opacity=0.6, nbins=40, labels={measure: labels.get(measure, measure)})
    fig.update_layout(title=f"Activation shift at the edit site{layer} (last prompt token)")
    return fig


def probe_layers(frame: pd.DataFrame, *, chosen: Sequence[int] = (), title: str | None = None) -> go.Figure:
    """Probe accuracy against the layer (mean over attributes when there is an ``attribute``
    column), one line per split; the chosen fact-lookup layers are shaded. A ``chance`` column
    adds the chance level as a dotted line."""
    need_columns(frame, ["layer", "value"], "probe_layers")
    keys = ["split", "layer"] if "split" in frame.columns else ["layer"]
    agg = frame.groupby(keys, as_index=False)["value"].mean().sort_values("layer")
    fig = px.line(agg, x="layer", y="value", color="split" if "split" in agg.columns else None, markers=True,
                  labels={"value": "probe accuracy", "layer": "layer (resid_post)"})
    for layer in chosen:
        fig.add_vrect(x0=layer - 0.4, x1=layer + 0.4, fillcolor="orange", opacity=0.2, line_width=0)
    if chosen:
        fig.add_annotation(x=list(chosen)[0], y=1.0, text="fact-lookup MLPs", showarrow=False, yshift=10)
    if "chance" in frame.columns:
        fig.add_hline(y=float(frame["chance"].mean()), line_dash="dot", line_color="grey", annotation_text="chance")
    fig.update_layout(title=title or "Attribute probe accuracy on the subject's last token", yaxis_range=[0, 1.05])
    fig.update_xaxes(dtick=1)
    return fig


def tradeoff_curve(frame: pd.DataFrame, *, x: str = "forget", y: str = "retain", label: str | None = "label") -> go.Figure:
    """Forget vs retain exact match of a sweep (one point per setting, joined in row order per
    ``method`` when present); the goal region (forget ≤ 0.2) is shaded."""
    need_columns(frame, [x, y], "tradeoff_curve")
    color = "method" if "method" in frame.columns else None
    text = label if label is not None and label in frame.columns else None
    fig = px.line(frame, x=x, y=y, color=color, text=text, markers=True, labels={x: f"{x} exact match", y: f"{y} exact match"})
    fig.update_traces(textposition="top center")
    fig.add_vrect(x0=0, x1=0.2, fillcolor="green", opacity=0.08, line_width=0)
    fig.update_layout(title="Forget vs retain trade-off", xaxis_range=[-0.02, 1.02], yaxis_range=[-0.02, 1.05])
    return fig
