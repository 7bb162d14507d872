"""Figures of the verifiers' meta-evaluation (`mechunlearn.verify.meta.meta_table`): DataFrame → Figure.

| function                   | draws                                                             |
| -------------------------- | ----------------------------------------------------------------- |
| `faithfulness_robustness`  | one point per verifier: faithfulness (AUC) against robustness (HM of R and Q) |
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from mechunlearn.figures import need_columns

TEMPLATE = "plotly_white"


def faithfulness_robustness(table: pd.DataFrame, *, robustness: str = "robustness", title: str | None = None) -> go.Figure:
    """Scatter of every verifier (a row of ``table``, index = verifier name): x = ``faithfulness``
    (AUC at separating models that hold the forget knowledge from models that never had it;
    0.5 = chance, dotted), y = ``robustness`` (or another column such as ``relearn_robustness``).
    Verifiers without a robustness value (no unlearned model scored) are listed in the title."""
    need_columns(table, ["faithfulness", robustness], "faithfulness_robustness")
    shown = table[table[robustness].notna()]
    hover = [
        f"{name}<br>faithfulness {row.faithfulness:.3f}<br>{robustness} {row[robustness]:.3f}"
        + "".join(f"<br>{c} {row[c]:.3f}" for c in ("relearn_robustness", "quant_robustness") if c in table.columns and c != robustness)
        for name, row in shown.iterrows()
    ]
    fig = go.Figure(go.Scatter(
        x=shown["faithfulness"], y=shown[robustness], mode="markers+text", text=[str(n) for n in shown.index],
        textposition="top center", hovertext=hover, hoverinfo="text", marker={"size": 11},
    ))
    fig.add_vline(x=0.5, line={"dash": "dot", "color": "grey"})
    left = [str(n) for n in table.index[table[robustness].isna()]]
    note = f" (no {robustness}: {', '.join(left)})" if left else ""
    fig.update_layout(
        template=TEMPLATE, title=(title or "verifiers: faithfulness vs robustness") + note,
        xaxis={"title": "faithfulness (AUC, positive vs negative models)", "range": [-0.02, 1.05]},
        yaxis={"title": robustness.replace("_", " "), "range": [-0.02, 1.08]}, width=720, height=520, showlegend=False,
    )
    return fig
