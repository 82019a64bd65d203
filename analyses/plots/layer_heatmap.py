"""Plot 2: per-layer G-effect heatmaps (parameter group × step) for the forget and retain probes.

Input schema (one row per method × tracked step × probe × parameter group)::

    method: str   step: int   probe: "forget" | "retain"   group: str   value: float

``value`` is the group's G-effect (sum over the group's parameters, mean over probe
instances). Groups are ``embed``, ``layer.0`` … ``layer.{L-1}``, ``final_norm``, ``lm_head``
(``geffect.parameter_groups``), drawn bottom-up in that order. Methods differ by orders of
magnitude, so each method's two heatmaps are divided by that method's largest |value|
(colour in [-1, 1], blue = lowers the risk, red = raises it); hover shows the raw value.

    from analyses.plots import layer_heatmap
    layer_heatmap.plot(frame).show()
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.plots import PROBE_LABELS, finish, empty_figure, method_order, require_columns
from geffect import layer_index

TITLE = "Per-layer G-effect (layer × step), scaled per method"


def group_sort_key(group: str) -> tuple[int, int, str]:
    """Order parameter groups from the input side to the output side."""
    i = layer_index(group)
    if i is not None:
        return (1, i, group)
    rank = {"embed": 0, "final_norm": 2, "lm_head": 3}.get(group, 4)
    return (rank, 0, group)


def plot(frame: pd.DataFrame, *, probes: tuple[str, ...] = ("forget", "retain")) -> go.Figure:
    """A grid of heatmaps: one row per method, one column per probe."""
    require_columns(frame, ["method", "step", "probe", "group", "value"], "layer_heatmap")
    frame = frame[frame["probe"].isin(probes)]
    if frame.empty:
        return empty_figure(TITLE, "no per-layer G-effects were tracked")
    probes = tuple(p for p in probes if p in set(frame["probe"]))
    methods = method_order(frame["method"])
    groups = sorted(frame["group"].unique(), key=group_sort_key)
    titles = [f"{m}: {PROBE_LABELS.get(p, p).split(' (')[0]}" for m in methods for p in probes]
    fig = make_subplots(rows=len(methods), cols=len(probes), subplot_titles=titles,
                        horizontal_spacing=0.08, vertical_spacing=min(0.08, 0.4 / len(methods)))
    for row, method in enumerate(methods, start=1):
        sub = frame[frame["method"] == method]
        scale = float(np.nanmax(np.abs(sub["value"].to_numpy()))) or 1.0
        for col, probe in enumerate(probes, start=1):
            grid = (sub[sub["probe"] == probe]
                    .pivot_table(index="group", columns="step", values="value", aggfunc="sum")
                    .reindex(groups))
            fig.add_trace(go.Heatmap(
                z=grid.to_numpy() / scale, x=[str(s) for s in grid.columns], y=groups,
                customdata=grid.to_numpy(), zmin=-1, zmax=1, zmid=0, colorscale="RdBu",
                coloraxis=None, showscale=(row == 1 and col == 1),
                colorbar={"title": "G / max|G|", "len": 0.3, "y": 1, "yanchor": "top"},
                hovertemplate=(f"{method} · {probe}<br>step %{{x}}<br>%{{y}}<br>"
                               "G-effect %{customdata:.4g}<extra></extra>")),
                row=row, col=col)
    fig.update_xaxes(type="category")  # tracked steps may be uneven (every k-th step)
    fig.update_xaxes(title_text="step", row=len(methods))
    fig.update_yaxes(tickfont={"size": 9})
    finish(fig, TITLE, max(400, 260 * len(methods)))
    return fig
