"""The report is a real web page: headless Chromium renders every figure with no console error.

Builds a report from synthetic tidy frames (fast; ``test_tofu_study_e2e.py`` covers the real
pipeline), injects a small recorder for console errors into a copy of the page, lets
Chromium run its JavaScript (``--virtual-time-budget``) and parses ``--dump-dom``. Skipped
only where no Chromium is installed (Debian: ``apt-get install chromium``).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analyses import synthetic
from analyses.findings import compute_findings
from analyses.report import build_sections, write_report

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"),
                             shutil.which("google-chrome"), "/usr/bin/chromium") if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (apt-get install chromium)")

# Records console.error/warn, uncaught errors and rejected promises into the DOM.
RECORDER = """<script>(function(){
  var log = [];
  function keep(kind, msg){ log.push(kind + ": " + msg);
    document.documentElement.setAttribute("data-console-errors", JSON.stringify(log)); }
  var err = console.error, warn = console.warn;
  console.error = function(){ keep("console.error", Array.prototype.join.call(arguments, " ")); err.apply(console, arguments); };
  console.warn = function(){ keep("console.warn", Array.prototype.join.call(arguments, " ")); warn.apply(console, arguments); };
  window.addEventListener("error", function(e){ keep("uncaught", e.message); });
  window.addEventListener("unhandledrejection", function(e){ keep("rejection", String(e.reason)); });
  document.documentElement.setAttribute("data-console-errors", "[]");
})();</script>"""


def render_dom(page: Path, tmp_path: Path) -> tuple[str, str]:
    """Run Chromium headless, off the network, on ``page``; return (DOM after JS, stderr)."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-default-apps", "--no-default-browser-check", f"--user-data-dir={tmp_path / 'profile'}",
           "--enable-logging=stderr", "--v=0", "--window-size=1300,1000",
           "--virtual-time-budget=30000", "--dump-dom", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout, proc.stderr


def figure_segments(dom: str) -> dict[str, str]:
    """The DOM between each figure div ``fig-<name>`` and the next one."""
    starts = [(m.group(1), m.start()) for m in re.finditer(r'<div id="fig-([a-z_]+)"', dom)]
    ends = [s for _, s in starts[1:]] + [len(dom)]
    return {name: dom[start:end] for (name, start), end in zip(starts, ends)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("report")
    frames = synthetic.frames(steps=4, layers=3, instances=6)
    sections = build_sections(frames)
    report = write_report(tmp_path / "report.html", sections, title="browser test",
                          findings=compute_findings(frames), metrics=frames["metrics"], config={"test": 1})
    page = tmp_path / "instrumented.html"
    html = report.read_text(encoding="utf-8")
    page.write_text(html.replace("<head>", "<head>" + RECORDER, 1), encoding="utf-8")
    dom, stderr = render_dom(page, tmp_path)
    return sections, dom, stderr


def test_every_figure_is_rendered(rendered):
    sections, dom, _ = rendered
    segments = figure_segments(dom)
    assert sorted(segments) == sorted(s.name for s in sections)
    for name, segment in segments.items():
        assert 'class="main-svg"' in segment, f"figure {name} has no rendered svg"
        assert "plot-container" in segment


def test_no_console_errors(rendered):
    _, dom, stderr = rendered
    recorded = re.search(r'data-console-errors="([^"]*)"', dom)
    assert recorded is not None, "the console recorder did not run"
    assert recorded.group(1) == "[]", recorded.group(1)
    console = [line for line in stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if "Uncaught" in line or "Error" in line], console


def test_page_is_self_contained(rendered):
    sections, dom, _ = rendered
    # no external script or stylesheet: the page works offline
    assert not re.search(r'<script[^>]+src="(https?:)?//', dom)
    assert not re.search(r'<link[^>]+href="(https?:)?//', dom)
    assert "Findings" in dom and re.search(r'<table[^>]*class="[^"]*metrics', dom)


def test_harness_detects_console_errors(tmp_path):
    """The check above can fail: a page that logs an error and throws is caught."""
    page = tmp_path / "bad.html"
    page.write_text("<html><head>" + RECORDER + "</head><body><script>console.error('boom');"
                    "undefinedFunction();</script></body></html>")
    dom, stderr = render_dom(page, tmp_path)
    recorded = re.search(r'data-console-errors="([^"]*)"', dom).group(1)
    assert "boom" in recorded and "undefinedFunction" in recorded
    assert any("Uncaught" in line for line in stderr.splitlines())
