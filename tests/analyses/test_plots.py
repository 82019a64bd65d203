"""The study's plots on synthetic tidy frames: each returns a figure with the expected traces."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from analyses import synthetic
from analyses.plots import (geffect_steps, layer_buckets, layer_heatmap, mask_density, method_color,
                            method_order, pg_scatter, save_figures, token_attribution, token_weights,
                            tradeoff, trajectory)

REPO = Path(__file__).resolve().parents[2]
FRAMES = synthetic.frames(["ga", "npo", "simsat", "simimp"], steps=4, layers=3, instances=5)
PLOTS = [(geffect_steps, "geffect_steps"), (layer_heatmap, "geffect_layers"),
         (layer_buckets, "geffect_layers"), (pg_scatter, "pg_effects"),
         (token_weights, "token_weights"), (mask_density, "mask_density"),
         (tradeoff, "metrics"), (trajectory, "trajectory"), (token_attribution, "token_attribution")]


@pytest.mark.parametrize("module,frame", PLOTS, ids=[m.__name__.rsplit(".", 1)[1] for m, _ in PLOTS])
def test_plot_returns_figure_with_data(module, frame):
    fig = module.plot(FRAMES[frame])
    assert isinstance(fig, go.Figure)
    assert len(fig.data) > 0
    assert fig.layout.height and fig.layout.height >= 300
    fig.to_json()  # serialisable (no numpy objects plotly cannot encode)


@pytest.mark.parametrize("module,frame", PLOTS, ids=[m.__name__.rsplit(".", 1)[1] for m, _ in PLOTS])
def test_plot_names_missing_columns(module, frame):
    with pytest.raises(ValueError, match="lacks column"):
        module.plot(FRAMES[frame].drop(columns=[FRAMES[frame].columns[0]]))


def test_geffect_steps_cumulative_is_running_sum():
    frame = pd.DataFrame({"method": "ga", "probe": "forget", "step": [3, 1, 2], "value": [3.0, 1.0, 2.0]})
    out = geffect_steps.cumulative(frame)
    assert out["cumulative"].tolist() == [1.0, 3.0, 6.0]
    fig = geffect_steps.plot(frame)
    cum = [t for t in fig.data if list(t.y) == [1.0, 3.0, 6.0]]
    assert len(cum) == 1


def test_geffect_steps_empty_frame_gives_placeholder():
    fig = geffect_steps.plot(pd.DataFrame(columns=["method", "step", "probe", "value"]))
    assert len(fig.data) == 0 and "no G-effects" in fig.layout.annotations[0].text


def test_layer_heatmap_orders_groups_and_scales_per_method():
    fig = layer_heatmap.plot(FRAMES["geffect_layers"])
    heat = fig.data[0]
    assert list(heat.y) == ["embed", "layer.0", "layer.1", "layer.2", "final_norm", "lm_head"]
    for trace in fig.data:
        assert np.nanmax(np.abs(np.asarray(trace.z, dtype=float))) <= 1.0 + 1e-9
    assert len(fig.data) == 4 * 2  # methods x probes


def test_add_buckets_sums_values():
    frame = pd.DataFrame({"method": "ga", "probe": "forget",
                          "group": ["embed", "layer.0", "layer.1", "layer.2", "lm_head"],
                          "value": [1.0, 2.0, 3.0, 4.0, 5.0]})
    out = layer_buckets.add_buckets(frame).set_index("bucket")["value"]
    assert out.to_dict() == {"embed": 1.0, "shallow": 2.0, "middle": 3.0, "deep": 4.0, "lm": 5.0}
    # the buckets of geffect.layer_buckets: a leftover group is "other", not part of "lm"
    with_other = pd.concat([frame, frame.iloc[[0]].assign(group="other", value=7.0)])
    out = layer_buckets.add_buckets(with_other)
    assert list(out["bucket"].cat.categories) == [*layer_buckets.BUCKETS, "other"]
    assert out.set_index("bucket")["value"].to_dict() == {"embed": 1.0, "shallow": 2.0, "middle": 3.0, "deep": 4.0,
                                                          "lm": 5.0, "other": 7.0}
    fig = layer_buckets.plot(with_other)
    assert list(fig.data[0].x) == [*layer_buckets.BUCKETS, "other"]


def test_pg_scatter_uses_latest_step_by_default():
    fig = pg_scatter.plot(FRAMES["pg_effects"])
    assert all(len(t.x) == 5 for t in fig.data)
    assert "step 4" in fig.layout.annotations[0].text


def test_token_weights_binned_mean_matches_hand_computation():
    frame = pd.DataFrame({"method": "m", "likelihood": [0.01, 0.02, 0.99], "weight": [1.0, 3.0, 5.0]})
    out = token_weights.binned(frame, bins=2)
    assert out["weight"].tolist() == [2.0, 5.0]
    assert out["count"].tolist() == [2.0, 1.0]


def test_token_weights_accepts_histogram_counts():
    frame = pd.DataFrame({"method": "m", "likelihood": [0.1, 0.9], "weight": [1.0, 3.0], "count": [3, 1]})
    assert token_weights.binned(frame, bins=2)["weight"].tolist() == [1.0, 3.0]
    assert len(token_weights.plot(frame).data) == 2


def test_mask_density_pools_by_numel():
    frame = pd.DataFrame({"mask": "wagle", "group": "layer.0", "module": ["attn", "mlp"],
                          "density": [1.0, 0.0], "numel": [1, 3]})
    assert mask_density.pooled(frame, "group")["density"].tolist() == [0.25]


def test_tradeoff_marks_references():
    fig = tradeoff.plot(FRAMES["metrics"])
    names = {t.name for t in fig.data}
    assert "target (reference)" in names and "ga" in names
    assert fig.layout.xaxis2.type == "log"


def test_token_attribution_rows_normalised():
    fig = token_attribution.plot(FRAMES["token_attribution"])
    for trace in fig.data:
        z = np.abs(np.asarray(trace.z, dtype=float))
        assert np.allclose(z.max(axis=1), 1.0)
        assert list(trace.y)[0] == "before"


def test_method_colours_are_stable():
    from analyses.plots import _PALETTE, KNOWN_METHODS, REFERENCE_COLORS

    first = KNOWN_METHODS[: len(_PALETTE)]
    assert len({method_color(m) for m in first}) == len(first)  # the study's methods are told apart
    assert method_color("target") == REFERENCE_COLORS["target"] and method_color("retain") == REFERENCE_COLORS["retain"]
    # "stable across runs": another interpreter with another hash seed gives the same colours
    code = "from analyses.plots import method_color as c; print(c('my_new_method'), c('ga'), c('satimp'))"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert outs == {f"{method_color('my_new_method')} {method_color('ga')} {method_color('satimp')}\n"}
    assert method_order(["zzz", "satimp", "ga"]) == ["ga", "satimp", "zzz"]


def test_save_figures_writes_html_and_skips_png_on_request(tmp_path):
    written = save_figures({"steps": geffect_steps.plot(FRAMES["geffect_steps"])}, tmp_path, png=False)
    html = written["steps"]["html"].read_text()
    assert "plotly" in html and "png" not in written["steps"]


def test_save_figures_warns_when_png_export_fails(tmp_path, monkeypatch, caplog):
    import plotly.io as pio

    def boom(*a, **k):
        raise RuntimeError("no browser")

    monkeypatch.setattr(pio, "write_images", boom)
    written = save_figures({"steps": geffect_steps.plot(FRAMES["geffect_steps"])}, tmp_path)
    assert written["steps"]["html"].exists() and "png" not in written["steps"]
    assert "PNG export skipped" in caplog.text


def test_geffect_steps_button_rescales_per_method():
    fig = geffect_steps.plot(FRAMES["geffect_steps"])
    raw, scaled = (b.args[0]["y"] for b in fig.layout.updatemenus[0].buttons)
    assert len(raw) == len(scaled) == len(fig.data)
    assert max(abs(v) for ys in scaled for v in ys) == pytest.approx(1.0)
    assert [list(t.y) for t in fig.data] == [list(y) for y in raw]


def test_trajectory_draws_one_line_per_method_and_the_budget():
    fig = trajectory.plot(FRAMES["trajectory"], budget=0.8)
    lines = [t for t in fig.data if t.xaxis in (None, "x")]
    assert sorted(t.name for t in lines) == sorted(FRAMES["trajectory"]["method"].unique())
    target = FRAMES["trajectory"].query("step == 0")["retain_es"].iloc[0]
    assert any(abs(shape.y0 - 0.8 * target) < 1e-12 for shape in fig.layout.shapes)
