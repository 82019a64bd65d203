"""One self-contained HTML report: figures, metrics table, run configuration and findings.

plotly.js is inlined once in the page head, so ``report.html`` opens offline in any browser
and weighs about 5 MB. Build a demo report from synthetic data (no training)::

    python -m analyses.report --synthetic /tmp/demo_report.html
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analyses.findings import Finding
from analyses.plots import (empty_figure, geffect_steps, layer_buckets, layer_heatmap, mask_density, pg_scatter,
                            token_attribution, token_weights, tradeoff, trajectory)
from geffect.cli import dataclass_parser, parse_dataclass
from geffect.io import atomic_write_text

logger = logging.getLogger(__name__)


@dataclass
class Section:
    """One figure of the report: ``name`` (also the div id ``fig-<name>``), heading and caption."""

    name: str
    title: str
    figure: go.Figure
    caption: str = ""


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1250px;
padding:0 24px 60px;color:#222;line-height:1.45}
h1{margin-top:28px} h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:40px}
nav a{margin-right:14px} .caption{color:#555;max-width:1000px}
table.metrics{border-collapse:collapse;font-size:13px;margin:8px 0}
table.metrics th,table.metrics td{border:1px solid #ddd;padding:4px 8px;text-align:right}
table.metrics th{background:#f4f4f4} table.metrics td:first-child{text-align:left;font-weight:600}
pre{background:#f7f7f7;padding:12px;overflow:auto;font-size:12px;max-height:420px}
ul.findings li{margin:6px 0} .meta{color:#666;font-size:13px} .figure{margin:10px 0 28px}
.banner{padding:12px 16px;border-radius:6px;margin:16px 0;font-size:15px}
.banner.ok{background:#e8f5e9;border:1px solid #81c784} .banner.fail{background:#ffebee;border:2px solid #e53935;font-weight:600}
table.findings{border-collapse:collapse;font-size:13.5px;margin:8px 0;width:100%}
table.findings th,table.findings td{border:1px solid #ddd;padding:6px 8px;vertical-align:top;text-align:left}
table.findings th{background:#f4f4f4} td.verdict{font-weight:600;white-space:nowrap}
td.supports{color:#2e7d32} td.contradicts{color:#c62828} td.inconclusive{color:#8d6e00} td.describes{color:#555}
"""


def metrics_table(metrics: pd.DataFrame, *, columns: Sequence[str] | None = None) -> str:
    """The metrics frame (one row per model) as an HTML table with 4 significant digits."""
    if metrics is None or metrics.empty:
        return "<p>No model was evaluated.</p>"
    frame = metrics.copy()
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    frame = frame.set_index("method") if "method" in frame.columns else frame
    table = frame.to_html(classes="metrics", float_format=lambda x: f"{x:.4g}", na_rep="–", border=0)
    return f"<div style='overflow-x:auto'>{table}</div>"


def render_html(sections: Iterable[Section], *, title: str, findings: Sequence[Finding] = (),
                metrics: pd.DataFrame | None = None, config: Mapping | None = None,
                intro: str = "", notes: Sequence[str] = (), banner: tuple[str, str] | None = None) -> str:
    """The report page as a string: plotly.js inlined once, one div per figure."""
    sections = list(sections)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>{html.escape(title)}</title><style>{CSS}</style>",
             f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>generated {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M UTC}</p>"]
    if banner:
        kind, text = banner
        parts.append(f"<div class='banner {html.escape(kind)}' id='gate'>{html.escape(text)}</div>")
    if intro:
        parts.append(f"<p>{intro}</p>")
    nav = ["<a href='#findings'>Findings</a>", "<a href='#metrics'>Metrics</a>"]
    nav += [f"<a href='#sec-{s.name}'>{html.escape(s.title)}</a>" for s in sections]
    nav.append("<a href='#config'>Configuration</a>")
    parts.append("<nav>" + " ".join(nav) + "</nav>")
    parts.append("<h2 id='findings'>Findings</h2>")
    if findings:
        rows = "".join(
            f"<tr data-key='{html.escape(f.key)}'><td>{html.escape(f.claim)}</td><td>{html.escape(f.text)}</td>"
            f"<td class='verdict {html.escape(f.verdict)}'>{html.escape(f.verdict)}</td></tr>" for f in findings)
        parts.append("<table class='findings'><tr><th>claim tested (source)</th><th>what the data show</th>"
                     "<th>verdict</th></tr>" + rows + "</table>")
    else:
        parts.append("<p>No finding could be computed from the data.</p>")
    for note in notes:
        parts.append(f"<p class='caption'>{html.escape(note)}</p>")
    parts.append("<h2 id='metrics'>Metrics</h2>")
    parts.append(metrics_table(metrics))
    for s in sections:
        div = s.figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{s.name}",
                               config={"responsive": True, "displaylogo": False})
        parts.append(f"<h2 id='sec-{s.name}'>{html.escape(s.title)}</h2>")
        if s.caption:
            parts.append(f"<p class='caption'>{html.escape(s.caption)}</p>")
        parts.append(f"<div class='figure'>{div}</div>")
    parts.append("<h2 id='config'>Configuration</h2>")
    parts.append(f"<pre>{html.escape(json.dumps(config or {}, indent=2, default=str))}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str | Path, sections: Iterable[Section], **kwargs) -> Path:
    """Write :func:`render_html` to ``path`` atomically (tmp file + rename)."""
    path = atomic_write_text(path, render_html(sections, **kwargs))
    logger.info("report written to %s", path)
    return path


def build_sections(frames: Mapping[str, pd.DataFrame], *, budget: float = 0.9,
                   options: Mapping[str, Mapping] | None = None, captions: Mapping[str, str] | None = None
                   ) -> list[Section]:
    """The study's figures from its tidy frames (a missing frame gives an explanatory figure).

    ``budget``: the utility budget drawn in the trajectory figure; ``options``: keyword arguments
    of a section's plot, by section name (a benchmark's metrics: ``tradeoff`` panels, ``trajectory``
    axes); ``captions``: a benchmark's own captions, by section name.
    """
    options = {"trajectory": {"budget": budget}, **{k: dict(v) for k, v in (options or {}).items()}}
    options["trajectory"].setdefault("budget", budget)
    empty = pd.DataFrame()
    get = lambda name: frames.get(name, empty)  # noqa: E731
    specs = [
        ("geffect_steps", "1. G-effect per step", geffect_steps,
         "geffect_steps", "Unlearning (forget probe) and retaining (retain probe) G-effect of each "
         "tracked step and their running sum. > 0: the step lowers the probe's risk; a good objective "
         "has a clearly negative unlearning G-effect and a retaining G-effect ≥ 0."),
        ("layer_heatmap", "2. Per-layer G-effect heatmaps", layer_heatmap, "geffect_layers",
         "Parameter group × step, each method scaled by its largest |G-effect| (hover for raw values)."),
        ("layer_buckets", "3. Layer buckets", layer_buckets, "geffect_layers",
         "Cumulative G-effect per bucket: embed, shallow/middle/deep thirds of the decoder layers, lm "
         "(final norm + head)."),
        ("pg_scatter", "4. PG-effects per forget instance", pg_scatter, "pg_effects",
         "Each point is a forget instance: its PG-effect on the forget probe (x) and on the retain probe (y), "
         "coloured by the weight the method gave it."),
        ("token_weights", "5. Token weights", token_weights, "token_weights",
         "Distribution of the forget-token weights each objective used, and the mean weight per likelihood bin."),
        ("mask_density", "6. WAGLE mask density", mask_density, "mask_density",
         "Fraction of weights each mask lets the optimizer update, per parameter group and module type."),
        ("tradeoff", "7. Trade-offs", tradeoff, "metrics",
         "Forget vs retain extraction strength, and TOFU forget quality vs model utility; the target and "
         "retain models are references."),
        ("trajectory", "8. Trade-off trajectories", trajectory, "trajectory",
         "Forget vs retain extraction strength at evenly spaced checkpoints of every run (step 0 = the target). "
         "Methods are compared where their curve crosses the dashed utility budget (see the findings)."),
        ("token_attribution", "9. Token attributions", token_attribution, "token_attribution",
         "Integrated-gradients attribution of the answer log-likelihood to each answer token's embedding, "
         "before and after unlearning."),
    ]
    sections = []
    for name, title, module, frame_name, caption in specs:
        caption = (captions or {}).get(name, caption)
        try:
            fig = module.plot(get(frame_name), **options.get(name, {})) if not get(frame_name).empty else None
        except Exception:
            logger.exception("plot %s failed; the report shows a placeholder", name)
            fig = None
        if fig is None:
            fig = empty_figure(module.TITLE, f"no data for this plot ({frame_name} is empty)")
        sections.append(Section(name, title, fig, caption))
    return sections


@dataclass
class ReportArguments:
    """Options of ``python -m analyses.report``."""

    synthetic: str = field(metadata={"help": "Write a report built from synthetic tidy frames (the study's schemas, "
                                             "no training) to this HTML file."})


def main(argv: Sequence[str] | None = None) -> Path:
    """``python -m analyses.report --synthetic PATH``: the demo report; returns its path."""
    args = parse_dataclass(dataclass_parser(ReportArguments, prog="python -m analyses.report",
                                            description=__doc__.split("\n\n")[0]), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from analyses import synthetic
    from analyses.findings import compute_findings

    frames = synthetic.frames()
    return write_report(args.synthetic, build_sections(frames), title="G-effect study (synthetic demo data)",
                        findings=compute_findings(frames), metrics=frames["metrics"],
                        config={"data": "synthetic", "note": "random frames with the study's schemas"})


if __name__ == "__main__":
    main()
