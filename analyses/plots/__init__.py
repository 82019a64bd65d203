"""Diagnostic plots of the G-effect study: each a pure function ``tidy DataFrame -> plotly Figure``.

Every module here takes one tidy frame with a documented schema (see each function's
docstring and ``docs/analyses.md``) and returns a ``plotly.graph_objects.Figure``; nothing
reads files or trains models, so the plots are testable on synthetic frames and callable from
a notebook on a user's own runs::

    from analyses.plots import geffect_steps
    fig = geffect_steps.plot(steps_frame)   # columns: method, step, probe, value
    fig.show()

``save_figures`` writes each figure as a standalone HTML page and, where kaleido finds a
Chromium, as a PNG.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Mapping

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

logger = logging.getLogger(__name__)

# Fixed colour per method so every plot of a report agrees (Plotly's D3 + extras).
_PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
    "#7f7f7f", "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
    "#e7969c", "#3182bd", "#31a354", "#756bb1", "#fd8d3c", "#636363", "#9c9ede",
]
KNOWN_METHODS = ["ga", "gd", "npo", "wga", "tnpo", "simsat", "simimp", "satimp", "wagle_gd",
                 "random_gd", "wtnpo", "simnpo", "idk", "rmu", "topk", "bottomk", "random",
                 "satimp_instance", "satimp_group", "satimp_batch", "rmu_geffect"]
REFERENCE_COLORS = {"target": "#000000", "retain": "#999999"}
PROBE_LABELS = {"forget": "unlearning G-effect (forget probe)",
                "retain": "retaining G-effect (retain probe)"}
TEMPLATE = "plotly_white"
DEFAULT_WIDTH = 1100  # PNG width in CSS pixels (the HTML figures are responsive)


def finish(fig: go.Figure, title: str, height: int, **layout) -> go.Figure:
    """Apply the shared look: template, title, height, small subplot titles."""
    fig.update_layout(title={"text": title, "font": {"size": 17}}, template=TEMPLATE, height=height,
                      margin={"t": 90}, **layout)
    fig.update_annotations(font_size=12)
    return fig


def method_color(method: str) -> str:
    """The colour of ``method`` in every plot (stable across runs and subsets)."""
    if method in REFERENCE_COLORS:
        return REFERENCE_COLORS[method]
    if method in KNOWN_METHODS:
        return _PALETTE[KNOWN_METHODS.index(method) % len(_PALETTE)]
    return _PALETTE[sum(map(ord, method)) % len(_PALETTE)]


def method_order(methods: Iterable[str]) -> list[str]:
    """Methods in the study's canonical order, unknown names last (alphabetically)."""
    methods = list(dict.fromkeys(methods))
    known = [m for m in KNOWN_METHODS if m in methods]
    return known + sorted(m for m in methods if m not in KNOWN_METHODS)


def require_columns(frame: pd.DataFrame, columns: Iterable[str], plot: str) -> None:
    """Raise a ``ValueError`` naming the missing columns of ``frame`` for ``plot``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{plot}: the frame lacks column(s) {missing}; it has {list(frame.columns)}. "
                         f"See the function's docstring for the expected tidy schema.")


def empty_figure(title: str, message: str) -> go.Figure:
    """A figure that says why there is nothing to plot (keeps reports complete)."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font={"size": 14})
    fig.update_layout(title=title, template=TEMPLATE, height=300,
                      xaxis={"visible": False}, yaxis={"visible": False})
    return fig


def save_figures(figures: Mapping[str, go.Figure], out_dir: str | Path, *, png: bool = True,
                 scale: float = 1.5) -> dict[str, dict[str, Path]]:
    """Write ``figures`` as ``<name>.html`` (plotly.js inline, works offline) and ``<name>.png``.

    PNGs go through kaleido in one batch; where it cannot find a Chromium (or fails for any
    other reason) the PNGs are skipped with a logged warning and the HTML files still exist.
    Returns ``{name: {"html": path, "png": path?}}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Path]] = {}
    for name, fig in figures.items():
        path = out_dir / f"{name}.html"
        fig.write_html(path, include_plotlyjs=True, full_html=True)
        written[name] = {"html": path}
    if png and figures:
        paths = [out_dir / f"{name}.png" for name in figures]
        figs = list(figures.values())
        try:
            pio.write_images(figs, paths, format="png", scale=scale,
                             width=[f.layout.width or DEFAULT_WIDTH for f in figs],
                             height=[f.layout.height or 500 for f in figs])
        except Exception as err:  # kaleido raises several types when no browser is found
            logger.warning("PNG export skipped (kaleido could not render: %s). Install Chromium "
                           "(e.g. `apt-get install chromium`) or run `plotly_get_chrome` to get PNGs.",
                           str(err).splitlines()[0] if str(err) else type(err).__name__)
        else:
            for name, path in zip(figures, paths):
                written[name]["png"] = path
    return written
