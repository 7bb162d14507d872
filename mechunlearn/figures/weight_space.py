"""Weight-space figures: where an edit moved the weights, where masks sit, SLUG's Pareto front,
and each method's forget-vs-retain trade-off. Every function takes a tidy DataFrame and returns
a plotly `Figure` (never ``.show()``).

| function          | input frame (columns)                                             |
| ----------------- | ----------------------------------------------------------------- |
| `delta_by_layer`  | method, layer, module, weight, metric, value  (`weight_deltas`)   |
| `mask_density`    | method, name, layer, module, density  (``MaskSelection.to_frame``) |
| `slug_pareto`     | name, importance, alignment, pareto  (``SlugResult.stats``)       |
| `tradeoff`        | method, forget, retain  (one row per run or config)               |

`weight_deltas(model, edit)` builds the first frame from any weight edit (DeltaEdit, WeightEdit,
Compose) with the weight traces of `mechunlearn.verify.weight_traces`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mechunlearn.figures import need_columns

from mechunlearn.core.edit import Edit, EditHandle

if TYPE_CHECKING:
    from mechunlearn.models.model import Model


def _touched(handle: EditHandle) -> list[str]:
    parts = getattr(handle, "parts", ())
    return list(dict.fromkeys([*handle.weights, *(n for p in parts for n in _touched(p))]))


def weight_deltas(model: "Model", edit: Edit, *, method: str | None = None) -> pd.DataFrame:
    """The weight traces (`mechunlearn.verify.weight_traces`, without spectra) of any weight edit —
    `DeltaEdit`, `WeightEdit` or a `Compose` such as Needle's noise + delta — found by applying it,
    reading the weights it touched and reverting exactly. Long format: one row per weight (and per
    layer × module with ``weight == "all"``) and metric (``delta_frobenius``, ``rel_frobenius``,
    ``delta_density``)."""
    from mechunlearn.verify.weight_traces import weight_traces

    with edit.applied(model) as handle:
        names = _touched(handle)
        if not names:
            raise ValueError(f"{edit!r} changes no weights (a hook edit?); weight deltas need a weight edit")
        after = {n: model.weight(n).detach().clone() for n in names}
    return weight_traces(model, after=after, spectrum=False, method=method or getattr(edit, "label", type(edit).__name__)).frame


def _layer_label(layer) -> str:
    return "other" if pd.isna(layer) else f"L{int(layer)}"


def delta_by_layer(frame: pd.DataFrame, *, metric: str = "delta_frobenius") -> go.Figure:
    """Bars of ‖Δθ‖ (or ``rel_frobenius``) per layer, stacked by module, one panel per method,
    from `weight_deltas` frames (their per layer × module rows, ``weight == "all"``)."""
    need_columns(frame, ["method", "layer", "module", "weight", "metric", "value"], "delta_by_layer")
    data = frame[(frame["weight"] == "all") & (frame["metric"] == metric)]
    if data.empty:
        raise ValueError(f"no per-layer rows of metric {metric!r}; build the frame with weight_deltas(...)")
    data = data.assign(layer_label=data["layer"].map(_layer_label)).sort_values(["method", "layer_label"])
    label = {"delta_frobenius": "‖Δθ‖", "rel_frobenius": "‖Δθ‖ / ‖θ‖"}.get(metric, metric)
    fig = px.bar(data, x="layer_label", y="value", color="module", facet_col="method", facet_col_wrap=4,
                 labels={"layer_label": "layer", "value": label}, title="Where each edit moved the weights")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig


def mask_density(frame: pd.DataFrame) -> go.Figure:
    """Share of selected weights per layer and module, one panel per method (mask)."""
    need_columns(frame, ["method", "layer", "module", "density"], "mask_density")
    data = frame.copy()
    weight = data["numel"] if "numel" in data.columns else pd.Series(1.0, index=data.index)
    selected = data["selected"] if "selected" in data.columns else data["density"] * weight
    data = data.assign(layer_label=data["layer"].map(_layer_label), w=weight, s=selected)
    grouped = data.groupby(["method", "layer_label", "module"], as_index=False, sort=True)[["s", "w"]].sum()
    grouped["density"] = grouped["s"] / grouped["w"]
    fig = px.bar(grouped, x="layer_label", y="density", color="module", barmode="group", facet_col="method",
                 facet_col_wrap=4, labels={"layer_label": "layer", "density": "selected fraction"},
                 title="Mask density per layer and module")
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig


def slug_pareto(stats: pd.DataFrame, chosen: str | None = None) -> go.Figure:
    """SLUG's candidates: importance ‖g_f‖/‖θ‖ (log x) against alignment |cos(g_f, g_r)|, the
    Pareto front (high importance, low alignment) joined by a line, the chosen tensor starred."""
    need_columns(stats, ["name", "importance", "alignment", "pareto"], "slug_pareto")
    data = stats.assign(on_front=np.where(stats["pareto"], "Pareto front", "dominated"))
    color = "module" if "module" in data.columns else None
    fig = px.scatter(data, x="importance", y="alignment", color=color, symbol="on_front", hover_name="name",
                     log_x=True, labels={"importance": "importance ‖g_f‖/‖θ‖", "alignment": "alignment |cos(g_f, g_r)|"},
                     title="SLUG: per-tensor importance vs alignment")
    front = data[data["pareto"]].sort_values("importance")
    fig.add_trace(go.Scatter(x=front["importance"], y=front["alignment"], mode="lines", line=dict(color="black", dash="dot"), name="front", hoverinfo="skip"))
    if chosen is not None:
        pick = data[data["name"] == chosen]
        if pick.empty:
            raise ValueError(f"chosen tensor {chosen!r} is not in the stats frame")
        fig.add_trace(go.Scatter(x=pick["importance"], y=pick["alignment"], mode="markers", marker=dict(symbol="star", size=16, color="gold", line=dict(color="black", width=1)), name=f"chosen: {chosen}"))
    return fig


def tradeoff(frame: pd.DataFrame, *, forget: str = "forget", retain: str = "retain", label: str | None = None) -> go.Figure:
    """Forget accuracy (x, lower is better) against retain accuracy (y, higher is better), one
    colour per method, each method's Pareto front (non-dominated runs) as a line."""
    from mechunlearn.locate.slug import pareto_front

    need_columns(frame, ["method", forget, retain], "tradeoff")
    fig = px.scatter(frame, x=forget, y=retain, color="method", hover_name=label,
                     labels={forget: "forget exact match (lower is better)", retain: "retain exact match (higher is better)"},
                     title="Forget vs retain: each method's trade-off")
    colors = {t.name: t.marker.color for t in fig.data}
    for method, group in frame.groupby("method", sort=False):
        front = group[pareto_front(group[retain].to_numpy(), group[forget].to_numpy())].sort_values(forget)
        if len(front) > 1:
            fig.add_trace(go.Scatter(x=front[forget], y=front[retain], mode="lines", line=dict(color=colors.get(str(method)), dash="dot"),
                                     name=f"{method} front", showlegend=False, hoverinfo="skip"))
    return fig


__all__ = ["delta_by_layer", "mask_density", "slug_pareto", "tradeoff", "weight_deltas"]
