"""Plot 9: trade-off trajectories: forget ES against retain ES along each unlearning run.

Input schema (one row per method × evaluated checkpoint; step 0 = the target model)::

    method: str   step: int   forget_es: float   retain_es: float   [model_utility: float]

(TOFU's columns; ``x`` / ``y`` / ``side`` name a benchmark's own, e.g. MUSE ``verbmem_f`` /
``knowmem_r``, WMDP ``wmdp`` / ``mmlu``.)

Each method is a line from the target (top right: it remembers both) towards the bottom
left; a good method moves left (forgets) while staying high (keeps retain ES). The dashed
line is the utility budget of the matched comparison (retain ES = budget × the target's): the
study compares methods where their curves cross it.

    from analyses.plots import trajectory
    trajectory.plot(frame, budget=0.9).show()
"""
from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analyses.plots import empty_figure, finish, method_color, method_order, require_columns

TITLE = "Trade-off trajectories during unlearning"


def plot(frame: pd.DataFrame, *, budget: float = 0.9, x: str = "forget_es", y: str = "retain_es",
         x_name: str = "forget ES", y_name: str = "retain ES", side: str | None = "model_utility",
         side_name: str = "model utility") -> go.Figure:
    """Left: ``y`` (retain ES) vs ``x`` (forget ES) per checkpoint; right: ``side`` (model utility) vs step
    (when logged). The column names and their labels are a benchmark's axes (defaults: TOFU's)."""
    require_columns(frame, ["method", "step", x, y], "trajectory")
    if frame.empty:
        return empty_figure(TITLE, "no trajectory was recorded")
    has_mu = side is not None and side in frame.columns and frame[side].notna().any()
    fig = make_subplots(rows=1, cols=2 if has_mu else 1, horizontal_spacing=0.1,
                        subplot_titles=[f"{x_name} vs {y_name}", f"{side_name} over steps"][: 2 if has_mu else 1])
    for method in method_order(frame["method"].unique()):
        m = frame[frame["method"] == method].sort_values("step")
        line = {"color": method_color(method), "width": 2}
        fig.add_trace(go.Scatter(x=m[x], y=m[y], mode="lines+markers", name=method,
                                 legendgroup=method, line=line, customdata=m["step"],
                                 hovertemplate=f"{method}<br>step %{{customdata}}<br>{x_name} %{{x:.3f}}<br>"
                                               f"{y_name} %{{y:.3f}}<extra></extra>"), row=1, col=1)
        if has_mu:
            fig.add_trace(go.Scatter(x=m["step"], y=m[side], mode="lines+markers", name=method,
                                     legendgroup=method, showlegend=False, line=line), row=1, col=2)
    start = frame[frame["step"] == 0][y]
    if not start.empty:
        fig.add_hline(y=budget * float(start.iloc[0]), line_dash="dash", line_color="#888", row=1, col=1,
                      annotation_text=f"{budget:.0%} of the target's {y_name}", annotation_position="bottom right")
    fig.update_xaxes(title_text=f"{x_name} (↓ forgets)", row=1, col=1)
    fig.update_yaxes(title_text=f"{y_name} (↑ keeps)", row=1, col=1)
    if has_mu:
        fig.update_xaxes(title_text="optimizer step", row=1, col=2)
        fig.update_yaxes(title_text=side_name, row=1, col=2)
    finish(fig, TITLE, 480, legend={"title": "method"})
    return fig
