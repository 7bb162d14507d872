"""Figures of the planted-knowledge benchmark (issue 14): DataFrame → plotly Figure.

| function             | draws                                                                  |
| -------------------- | ---------------------------------------------------------------------- |
| `auroc_heatmap`      | AUROC against S, localizer × plant type, at each localizer's own granularity |
| `restricted_bars`    | forget / retain exact match and relearning recovery per selection, one panel per loss |
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def auroc_heatmap(table: pd.DataFrame) -> go.Figure:
    """``table``: `score_table` rows with a ``plant`` column (one block per plant type). Each cell
    is the localizer's AUROC at its own granularity (named in the cell); NaN where S covers every
    unit of that granularity or none."""
    need = {"localizer", "granularity", "auroc", "plant", "own"}
    if not need <= set(table.columns):
        raise ValueError(f"auroc_heatmap needs columns {sorted(need)} (score_table rows with a plant column); got {list(table.columns)}")
    own = table[table["own"].astype(bool)]
    own = own[~own["localizer"].isin(["random", "oracle"])] if own["localizer"].nunique() > 2 else own
    z = own.pivot_table(index="localizer", columns="plant", values="auroc", aggfunc="first", dropna=False)
    gran = own.pivot_table(index="localizer", columns="plant", values="granularity", aggfunc="first")
    order = list(dict.fromkeys(own["localizer"]))
    z, gran = z.reindex(order), gran.reindex(index=order, columns=z.columns)
    text = [[("—" if pd.isna(v) else f"{v:.2f}") + f"<br>{g if isinstance(g, str) else ''}" for v, g in zip(zr, gr)]
            for zr, gr in zip(z.to_numpy(), gran.to_numpy())]
    fig = go.Figure(go.Heatmap(z=z.to_numpy(), x=list(z.columns), y=order, text=text, texttemplate="%{text}",
                               zmin=0, zmax=1, zmid=0.5, colorscale="RdBu", colorbar={"title": "AUROC"}))
    fig.update_layout(title="Does the localizer find S? AUROC against the planted set (0.5: random, 1: S itself)",
                      xaxis_title="plant type", yaxis={"autorange": "reversed", "title": "localizer"},
                      height=max(320, 40 * len(order) + 150))
    return fig


def restricted_bars(table: pd.DataFrame, *, metrics: tuple[str, ...] = ("exact_match:forget", "exact_match:retain", "relearn_other_half_em")) -> go.Figure:
    """``table``: `restricted_unlearning`'s table (with the card's columns); one bar group per
    selection, one panel per loss (and per plant type if the table has a ``plant`` column)."""
    present = [m for m in metrics if m in table.columns]
    if not present or not {"loss", "selection"} <= set(table.columns):
        raise ValueError(f"restricted_bars needs loss, selection and some of {list(metrics)}; got {list(table.columns)}")
    ids = ["loss", "selection"] + (["plant"] if "plant" in table.columns else [])
    long = table.melt(id_vars=ids, value_vars=present, var_name="metric", value_name="value")
    fig = px.bar(long, x="selection", y="value", color="metric", barmode="group", facet_col="loss",
                 facet_row="plant" if "plant" in ids else None, range_y=[0, 1])
    fig.update_layout(title="Unlearning restricted to S, to each localizer's top-|S| pick, to random |S| entries, or not at all")
    return fig
