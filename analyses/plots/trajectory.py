"""Plot 9: trade-off trajectories: forget ES against retain ES along each unlearning run.

Input schema (one row per method × evaluated checkpoint; step 0 = the target model)::

    method: str   step: int   forget_es: float   retain_es: float   [model_utility: float]

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


def plot(frame: pd.DataFrame, *, budget: float = 0.9) -> go.Figure:
    """Left: retain ES vs forget ES per checkpoint; right: model utility vs step (when logged)."""
    require_columns(frame, ["method", "step", "forget_es", "retain_es"], "trajectory")
    if frame.empty:
        return empty_figure(TITLE, "no trajectory was recorded")
    has_mu = "model_utility" in frame.columns and frame["model_utility"].notna().any()
    fig = make_subplots(rows=1, cols=2 if has_mu else 1, horizontal_spacing=0.1,
                        subplot_titles=["forget ES vs retain ES", "model utility over steps"][: 2 if has_mu else 1])
    for method in method_order(frame["method"].unique()):
        m = frame[frame["method"] == method].sort_values("step")
        line = {"color": method_color(method), "width": 2}
        fig.add_trace(go.Scatter(x=m["forget_es"], y=m["retain_es"], mode="lines+markers", name=method,
                                 legendgroup=method, line=line, customdata=m["step"],
                                 hovertemplate=f"{method}<br>step %{{customdata}}<br>forget ES %{{x:.3f}}<br>"
                                               "retain ES %{y:.3f}<extra></extra>"), row=1, col=1)
        if has_mu:
            fig.add_trace(go.Scatter(x=m["step"], y=m["model_utility"], mode="lines+markers", name=method,
                                     legendgroup=method, showlegend=False, line=line), row=1, col=2)
    start = frame[frame["step"] == 0]["retain_es"]
    if not start.empty:
        fig.add_hline(y=budget * float(start.iloc[0]), line_dash="dash", line_color="#888", row=1, col=1,
                      annotation_text=f"{budget:.0%} of the target's retain ES", annotation_position="bottom right")
    fig.update_xaxes(title_text="forget ES (↓ forgets)", row=1, col=1)
    fig.update_yaxes(title_text="retain ES (↑ keeps)", row=1, col=1)
    if has_mu:
        fig.update_xaxes(title_text="optimizer step", row=1, col=2)
        fig.update_yaxes(title_text="model utility", row=1, col=2)
    finish(fig, TITLE, 480, legend={"title": "method"})
    return fig
