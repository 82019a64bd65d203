"""Plot 7: trade-offs: forget ES vs retain ES, and forget quality vs model utility.

Input schema (one row per evaluated model: each method plus the references)::

    method: str   forget_es: float   retain_es: float   forget_quality: float   model_utility: float
    [reference: bool]   (True for the target "target" and retain "retain" models)

Extraction strength (ES) on the forget set should fall and on the retain set stay high;
forget quality (KS-test p-value against the retain model, log axis) should rise towards the
retain model's, and model utility should stay near the target's.

    from analyses.plots import tradeoff
    tradeoff.plot(frame).show()
"""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.plots import finish, empty_figure, method_color, method_order, require_columns

TITLE = "Forgetting vs keeping: the trade-offs"
PANELS = [("forget_es", "retain_es", "forget ES (↓ better)", "retain ES (↑ better)"),
          ("forget_quality", "model_utility", "forget quality, log (↑ better)", "model utility (↑ better)")]
TITLES = ["extraction strength", "TOFU forget quality vs model utility"]


def plot(frame: pd.DataFrame, *, panels: Sequence[tuple[str, str, str, str]] = PANELS,
         titles: Sequence[str] = TITLES, log_x: Sequence[str] = ("forget_quality",)) -> go.Figure:
    """Scatter panels, one point per method; references drawn as open diamonds.

    ``panels``: (x column, y column, x title, y title) per panel (default TOFU's two); ``titles``:
    the panels' titles; ``log_x``: x columns drawn on a log axis (clamped away from 0).
    """
    require_columns(frame, ["method", *dict.fromkeys(c for p in panels for c in p[:2])], "tradeoff")
    if frame.empty:
        return empty_figure(TITLE, "no model was evaluated")
    frame = frame.copy()
    if "reference" not in frame.columns:
        frame["reference"] = frame["method"].isin(["target", "retain"])
    for col in log_x:  # log axis: clamp away from 0 (a KS p-value can underflow)
        if col in frame.columns:
            frame[col] = frame[col].astype(float).clip(lower=1e-30)
    fig = make_subplots(rows=1, cols=len(panels), horizontal_spacing=0.1 if len(panels) < 3 else 0.07,
                        subplot_titles=list(titles)[: len(panels)])
    order = method_order(frame.loc[~frame["reference"], "method"]) + \
        list(frame.loc[frame["reference"], "method"])
    for method in order:
        m = frame[frame["method"] == method]
        ref = bool(m["reference"].iloc[0])
        marker = {"color": method_color(method), "size": 13 if ref else 11,
                  "symbol": "diamond-open" if ref else "circle", "line": {"width": 2 if ref else 0.5}}
        for col, (x, y, _, _) in enumerate(panels, start=1):
            fig.add_trace(go.Scatter(
                x=m[x], y=m[y], mode="markers+text", text=[method], textposition="top center",
                textfont={"size": 10}, name=method + (" (reference)" if ref else ""),
                legendgroup=method, showlegend=(col == 1), marker=marker,
                hovertemplate=f"{method}<br>{x} %{{x:.4g}}<br>{y} %{{y:.4g}}<extra></extra>"),
                row=1, col=col)
    for col, (x, _, xt, yt) in enumerate(panels, start=1):
        fig.update_xaxes(title_text=xt, row=1, col=col)
        fig.update_yaxes(title_text=yt, row=1, col=col)
        if x in log_x:
            fig.update_xaxes(type="log", row=1, col=col)
    finish(fig, TITLE, 480, legend={"title": "model"})
    return fig
