"""Feature-space figures: SAE latent activations and frequencies, the clamp sweep, codebook code
frequencies. Every function takes a tidy DataFrame and returns a plotly `Figure` (never ``.show()``).

| function                | input frame (columns)                                                       |
| ----------------------- | --------------------------------------------------------------------------- |
| `activation_histogram`  | split, latent, activation  (`mechunlearn.locate.sae.latent_activations`)     |
| `frequency_scatter`     | latent, freq_forget, freq_retain [, selected]  (``Selection.to_frame()``)    |
| `clamp_sweep_curve`     | mode, clamp_value, n_features, split, metric, value  (`clamp_sweep`)          |
| `code_frequency_bars`   | latent, freq_forget, freq_retain [, disabled]  (``CodeFrequency`` selection) |
| `code_usage_histogram`  | latent, freq [, split]  (`mechunlearn.locate.codebook.code_frequencies`)      |
"""

from __future__ import annotations



import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from mechunlearn.figures import need_columns


def activation_histogram(frame: pd.DataFrame, *, nbins: int = 40, max_latents: int = 8) -> go.Figure:
    """Histogram of each latent's activation on the tokens where it fires, one panel per latent,
    forget and retain overlaid (the number of active tokens is in the legend's hover)."""
    need_columns(frame, ["split", "latent", "activation"], "activation_histogram")
    latents = list(dict.fromkeys(frame["latent"]))[:max_latents]
    data = frame[frame["latent"].isin(latents)].copy()
    data["latent"] = data["latent"].map(lambda i: f"latent {i}")
    fig = px.histogram(
        data, x="activation", color="split", facet_col="latent", facet_col_wrap=4, nbins=nbins, barmode="overlay", opacity=0.6,
        histnorm="probability", title="Activation of the selected latents where they fire (forget vs retain tokens)",
    )
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_xaxes(matches=None, title_text="")
    return fig


def frequency_scatter(frame: pd.DataFrame, *, selected: int | None = None, floor: float = 1e-5) -> go.Figure:
    """Firing frequency on retain (x) against forget (y) for every latent, log-log; the top
    ``selected`` rows of the (score-sorted) frame, or a boolean ``selected`` column, are marked."""
    need_columns(frame, ["latent", "freq_forget", "freq_retain"], "frequency_scatter")
    data = frame.copy()
    if "selected" not in data.columns:
        data["selected"] = False
        if selected:
            data.loc[data.index[:selected], "selected"] = True
    data["x"] = data["freq_retain"].clip(lower=floor)
    data["y"] = data["freq_forget"].clip(lower=floor)
    data["selected"] = data["selected"].map({True: "selected", False: "other"})
    fig = px.scatter(
        data, x="x", y="y", color="selected", hover_data=["latent", "freq_forget", "freq_retain"], log_x=True, log_y=True,
        color_discrete_map={"selected": "crimson", "other": "lightgray"},
        labels={"x": f"firing frequency on retain (floored at {floor:g})", "y": "firing frequency on forget"},
        title="Latents: how often they fire on forget vs retain tokens",
    )
    lo, hi = floor, 1.0
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line=dict(color="black", dash="dot"), name="equal", hoverinfo="skip"))
    return fig


def clamp_sweep_curve(frame: pd.DataFrame, *, forget: str = "forget", retain: str = "retain", metric: str = "exact_match") -> go.Figure:
    """The clamp sweep as a trade-off: retain (x) against forget (y) exact match, one line per clamp
    value (and one for zero-ablation) through the numbers of features; the unedited model a star."""
    need_columns(frame, ["mode", "clamp_value", "n_features", "split", "metric", "value"], "clamp_sweep_curve")
    data = frame[frame["metric"] == metric]
    wide = data.pivot_table(index=["mode", "clamp_value", "n_features"], columns="split", values="value").reset_index()
    for col in (forget, retain):
        if col not in wide.columns:
            raise ValueError(f"clamp_sweep_curve needs the split {col!r}; the sweep has {sorted(data['split'].unique())}")
    wide["setting"] = np.where(wide["mode"] == "zero", "zero-ablation", "clamp c=" + wide["clamp_value"].map(lambda v: f"{v:g}"))
    edited = wide[wide["mode"] != "none"].sort_values(["setting", "n_features"])
    fig = px.line(
        edited, x=retain, y=forget, color="setting", markers=True, hover_data=["n_features"], text="n_features",
        labels={retain: f"retain {metric} (higher is better)", forget: f"forget {metric} (lower is better)"},
        title="SAE clamping: forget vs retain as the number of clamped features grows (labels: #features)",
    )
    fig.update_traces(textposition="top center")
    base = wide[wide["mode"] == "none"]
    if len(base):
        fig.add_trace(go.Scatter(x=base[retain], y=base[forget], mode="markers", marker=dict(symbol="star", size=16, color="gold", line=dict(color="black", width=1)), name="unedited"))
    return fig


def code_frequency_bars(frame: pd.DataFrame, *, top: int = 30) -> go.Figure:
    """Firing frequency on forget and on control data of the ``top`` first codes of a (score-sorted)
    frame; disabled codes (a boolean ``disabled`` column) are outlined."""
    need_columns(frame, ["latent", "freq_forget", "freq_retain"], "code_frequency_bars")
    data = frame.head(top).copy()
    data["code"] = data["latent"].astype(str)
    long = data.melt(id_vars=["code"] + (["disabled"] if "disabled" in data.columns else []), value_vars=["freq_forget", "freq_retain"], var_name="data", value_name="frequency")
    long["data"] = long["data"].map({"freq_forget": "forget", "freq_retain": "control"})
    fig = px.bar(long, x="code", y="frequency", color="data", barmode="group", title=f"Code frequencies: the {len(data)} codes most specific to the forget data",
                 labels={"code": "code (rank order)", "frequency": "share of tokens choosing the code"})
    fig.update_xaxes(type="category")
    return fig


def code_usage_histogram(frame: pd.DataFrame, *, nbins: int = 50) -> go.Figure:
    """Distribution of code frequencies (log10 of the share of tokens choosing each code; unused
    codes at the left edge), per ``split`` if given."""
    need_columns(frame, ["latent", "freq"], "code_usage_histogram")
    data = frame.copy()
    positive = data["freq"][data["freq"] > 0]
    floor = float(positive.min()) / 10 if len(positive) else 1e-6
    data["log10_freq"] = np.log10(data["freq"].clip(lower=floor))
    fig = px.histogram(data, x="log10_freq", color="split" if "split" in data.columns else None, nbins=nbins, barmode="overlay", opacity=0.6,
                       title="Code usage: how often each code is chosen (log10 share of tokens; left edge: never)")
    return fig


__all__ = ["activation_histogram", "clamp_sweep_curve", "code_frequency_bars", "code_usage_histogram", "frequency_scatter"]
