"""Plot 3: G-effect per layer bucket (embed / shallow / middle / deep / lm) per method.

Input schema (one row per method × probe × parameter group; values already summed over the
tracked steps, i.e. the cumulative G-effect at the end of unlearning)::

    method: str   probe: "forget" | "retain"   group: str   value: float

Groups are bucketed with :func:`geffect.layer_buckets` (the decoder layers split in thirds, as
in Wang et al. 2025's layer analysis; the final norm joins the lm head; a group outside the
fine groups, e.g. ``other``, is its own ``other`` bucket) unless the frame already has a
``bucket`` column. Each method gets its own panel and y-axis (magnitudes differ by orders).

    from analyses.plots import layer_buckets
    layer_buckets.plot(frame).show()
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.plots import finish, empty_figure, method_order, require_columns
from geffect import LAYER_BUCKETS, layer_buckets

TITLE = "Cumulative G-effect per layer bucket"
BUCKETS = list(LAYER_BUCKETS)  # embed, shallow, middle, deep, lm
PROBE_COLORS = {"forget": "#d62728", "retain": "#1f77b4"}


def add_buckets(frame: pd.DataFrame) -> pd.DataFrame:
    """Sum ``value`` per (method, probe, bucket); keeps the bucket column if present.

    ``bucket`` is categorical in the order of :data:`BUCKETS`, then ``other`` when present.
    """
    frame = frame.copy()
    if "bucket" not in frame.columns:
        frame["bucket"] = frame["group"].map(layer_buckets(frame["group"]))
    out = frame.groupby(["method", "probe", "bucket"], as_index=False)["value"].sum()
    order = BUCKETS + sorted(set(out["bucket"]) - set(BUCKETS))
    out["bucket"] = pd.Categorical(out["bucket"], categories=order, ordered=True)
    return out.sort_values(["method", "probe", "bucket"])


def plot(frame: pd.DataFrame, *, cols: int = 3) -> go.Figure:
    """Grouped bars (forget vs retain probe) over the five buckets, one panel per method."""
    require_columns(frame, ["method", "probe", "value"], "layer_buckets")
    if "bucket" not in frame.columns:
        require_columns(frame, ["group"], "layer_buckets")
    if frame.empty:
        return empty_figure(TITLE, "no per-layer G-effects were tracked")
    data = add_buckets(frame)
    methods = method_order(data["method"])
    rows = -(-len(methods) // cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=methods, vertical_spacing=0.1,
                        horizontal_spacing=0.07)
    for k, method in enumerate(methods):
        row, col = k // cols + 1, k % cols + 1
        for probe in ("forget", "retain"):
            m = data[(data["method"] == method) & (data["probe"] == probe)]
            if m.empty:
                continue
            fig.add_trace(go.Bar(
                x=m["bucket"].astype(str), y=m["value"], name=f"{probe} probe", legendgroup=probe,
                marker_color=PROBE_COLORS.get(probe), showlegend=(k == 0),
                hovertemplate=f"{method} · {probe}<br>%{{x}}<br>%{{y:.4g}}<extra></extra>"),
                row=row, col=col)
    fig.update_xaxes(categoryorder="array", categoryarray=list(data["bucket"].cat.categories))
    finish(fig, TITLE + " (summed over tracked steps; >0 lowers the risk)", 280 * rows + 100,
           barmode="group")
    return fig
