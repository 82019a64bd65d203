"""The study's tidy frames, read from what the stages left on disk (schemas in docs/analyses.md).

Every reader works on one run folder of ``unlearning.train`` (``runs/<method>/``) or the
study's own folders and returns an empty frame when its data is missing or unreadable (the
report then shows "no data" for it and says why in the log), so one broken run never stops
the report. G-effects, PG-effects and probe weights are read through
``geffect.GEffectTracker.load`` — the tracker alone knows its file layout.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from geffect import GEffectTracker, layer_index, layer_of
from unlearning.hooks import ANALYSIS_DIR, PROBE_INSTANCE_WEIGHTS, PROBE_TOKEN_WEIGHTS, read_jsonl

logger = logging.getLogger(__name__)

__all__ = ["FRAMES", "METRIC_COLUMNS", "SUMMARY_KEYS", "TRAJECTORY_KEYS", "collect_frames", "geffect_frames", "metric_row",
           "read_parquet", "trajectory_frame"]

FRAMES = ("geffect_steps", "geffect_layers", "geffect_modules", "pg_effects", "token_weights", "mask_density",
          "metrics", "trajectory", "token_attribution")
#: TOFU's trajectory columns: evaluation summary keys at each checkpoint (the defaults below are
#: TOFU's; every benchmark passes its own, see ``analyses.studies``)
TRAJECTORY_KEYS = {"forget_es": "forget/extraction_strength", "retain_es": "retain/extraction_strength",
                   "model_utility": "model_utility", "forget_quality": "forget_quality",
                   "forget_probability": "forget/probability", "retain_probability": "retain/probability"}
METRIC_COLUMNS = ["method", "reference", "forget_es", "retain_es", "forget_quality", "model_utility",
                  "forget_probability", "retain_probability", "forget_rougeL", "retain_rougeL",
                  "forget_truth_ratio", "mia_min_k_auc", "steps", "train_s", "eval_s"]
#: TOFU's metrics-table column -> evaluation summary key
SUMMARY_KEYS = {"forget_es": "forget/extraction_strength", "retain_es": "retain/extraction_strength",
                 "forget_quality": "forget_quality", "model_utility": "model_utility",
                 "forget_probability": "forget/probability", "retain_probability": "retain/probability",
                 "forget_rougeL": "forget/rougeL_recall", "retain_rougeL": "retain/rougeL_recall",
                 "forget_truth_ratio": "forget/truth_ratio", "mia_min_k_auc": "mia/min_k_auc"}


def read_parquet(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path) if path.is_file() else pd.DataFrame()


def metric_row(method: str, summary: Mapping[str, Any], *, reference: bool = False,
               keys: Mapping[str, str] = SUMMARY_KEYS) -> dict[str, Any]:
    """One metrics-table row from an evaluation ``summary.json`` (``keys``: column -> summary key;
    missing values are NaN)."""
    def get(key: str) -> float:
        value = summary.get(key)
        return float(value) if isinstance(value, (int, float)) else float("nan")

    return {"method": method, "reference": reference, **{col: get(key) for col, key in keys.items()}}


def geffect_frames(run_dir: Path, method: str) -> dict[str, pd.DataFrame]:
    """``geffect_layers``, ``pg_effects`` and ``token_weights`` of one run (empty frames when unreadable).

    ``geffect_layers``: method, step, probe, group, value (mean over probe instances, per layer:
    block sub-groups ``layer.i.attn`` ... are summed into ``layer.i``); ``geffect_modules``:
    method, step, probe, layer, module, value (the block sub-groups, when tracked with
    ``geffect_groups="modules"``); ``geffect_steps``: method, step, probe, value (sum over
    groups), direction_norm (||d||, the update direction's norm) and per_norm (value / ||d||:
    the G-effect per unit of update, comparable across objectives of different gradient scale);
    ``pg_effects``: method, step, instance, unlearning, retaining, weight (PG-effect on the forget
    and retain probes summed over groups, and the objective's weight on that instance);
    ``token_weights``: method, step, instance, likelihood, weight (forget-probe answer tokens).
    """
    empty = {name: pd.DataFrame() for name in ("geffect_steps", "geffect_layers", "geffect_modules", "pg_effects",
                                               "token_weights")}
    analysis = run_dir / ANALYSIS_DIR
    try:
        record = GEffectTracker.load(analysis)
        layers = record.summary_table("fine")
        pg = record.pg_table("fine")
        tokens = record.step_table(PROBE_TOKEN_WEIGHTS)
        weights = record.step_table(PROBE_INSTANCE_WEIGHTS)
        norms = {int(k): v.get("direction_norm") for k, v in record.manifest.get("step_info", {}).items()}
    except FileNotFoundError:
        return empty
    except Exception:  # noqa: BLE001 - an unreadable run becomes "no data" in the report
        logger.exception("could not read the G-effect records in %s; the report shows no data for %s", analysis,
                         method)
        return empty
    out = dict(empty)
    if not layers.empty:
        layers = layers[layers["probe"].isin(["forget", "retain"])][["step", "probe", "group", "value"]]
        sub = layers[layers["group"].map(lambda g: layer_index(g) is not None and layer_of(g) != g)]
        if not sub.empty:
            out["geffect_modules"] = sub.assign(layer=sub["group"].map(layer_of),
                                                module=sub["group"].str.rsplit(".", n=1).str[-1],
                                                method=method).drop(columns="group")
        order = list(dict.fromkeys(layers["group"].map(layer_of)))
        merged = layers.assign(group=layers["group"].map(layer_of)).groupby(["step", "probe", "group"], sort=False,
                                                                           as_index=False)["value"].sum()
        merged["group"] = pd.Categorical(merged["group"], categories=order, ordered=True)
        merged = merged.sort_values(["step", "probe", "group"]).assign(group=lambda f: f["group"].astype(str))
        out["geffect_layers"] = merged.assign(method=method).reset_index(drop=True)
        steps = layers.groupby(["step", "probe"], as_index=False)["value"].sum()
        steps["direction_norm"] = steps["step"].map(norms).astype(float)
        steps["per_norm"] = steps["value"] / steps["direction_norm"]
        out["geffect_steps"] = steps.assign(method=method)
    if not pg.empty:
        totals = pg.groupby(["step", "instance", "probe"], as_index=False)["value"].sum()
        wide = totals.pivot_table(index=["step", "instance"], columns="probe", values="value").reset_index()
        wide = wide.rename(columns={"forget": "unlearning", "retain": "retaining"})
        if not weights.empty:
            wide = wide.merge(weights[["step", "instance", "weight"]], on=["step", "instance"], how="left")
        out["pg_effects"] = wide.assign(method=method)
    if not tokens.empty:
        out["token_weights"] = tokens[["step", "instance", "likelihood", "weight"]].assign(method=method)
    return {k: _method_first(v) for k, v in out.items()}


def _method_first(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    return frame[["method", *[c for c in frame.columns if c != "method"]]].reset_index(drop=True)


def _trajectory_row(method: str, step: int, summary: Mapping[str, Any],
                    keys: Mapping[str, str] = TRAJECTORY_KEYS) -> dict[str, Any]:
    row = {"method": method, "step": int(step)}
    for col, key in keys.items():
        value = summary.get(key)
        row[col] = float(value) if isinstance(value, (int, float)) else float("nan")
    return row


def trajectory_frame(run_dir: Path, method: str, final_step: int | None, start: Mapping[str, Any] | None = None,
                     keys: Mapping[str, str] = TRAJECTORY_KEYS):
    """method, step and the ``keys`` columns (TOFU: forget_es, retain_es, model_utility, ...) at every checkpoint.

    Step 0 is the model before unlearning (``start``: the target's evaluation summary), the
    intermediate checkpoints come from the run's ``eval/history.jsonl`` (``EvalCallback``), the
    last one from its final evaluation (``eval/summary.json``).
    """
    rows = [_trajectory_row(method, 0, start, keys)] if start else []
    history = run_dir / "eval" / "history.jsonl"
    if history.is_file():
        rows += [_trajectory_row(method, r["step"], r, keys) for r in read_jsonl(history) if r.get("step")]
    final = run_dir / "eval" / "summary.json"
    if final.is_file() and final_step is not None:
        rows.append(_trajectory_row(method, final_step, json.loads(final.read_text()), keys))
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates("step", keep="last").sort_values("step").reset_index(drop=True) if rows else frame


def collect_frames(out: Path, methods: list[str], done_file: str, *, summary_keys: Mapping[str, str] = SUMMARY_KEYS,
                   trajectory_keys: Mapping[str, str] = TRAJECTORY_KEYS,
                   reference_fill: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, pd.DataFrame]:
    """The study's tidy frames from everything on disk (methods with a done marker only).

    ``summary_keys`` / ``trajectory_keys``: the benchmark's metrics-table and trajectory columns
    and the evaluation summary keys behind them (default: TOFU's); ``reference_fill``: values a
    reference model's row takes where its summary has none (default: TOFU's retain model has
    forget quality 1, the KS test against itself).
    """
    fill = {"retain": {"forget_quality": 1.0}} if reference_fill is None else reference_fill
    parts: dict[str, list[pd.DataFrame]] = {name: [] for name in FRAMES}
    metrics = []
    for name in ("target", "retain"):
        summary = out / "references" / f"eval_{name}" / "summary.json"
        if summary.is_file():
            row = metric_row(name, json.loads(summary.read_text()), reference=True, keys=summary_keys)
            for col, value in fill.get(name, {}).items():
                if col in row and np.isnan(row[col]):
                    row[col] = value
            metrics.append(row)
    parts["token_attribution"].append(read_parquet(out / "references" / "attribution_before.parquet"))
    target = out / "references" / "eval_target" / "summary.json"
    start = json.loads(target.read_text()) if target.is_file() else None
    for method in methods:
        run_dir = out / "runs" / method
        marker = run_dir / done_file
        if not marker.is_file():
            continue
        info = json.loads(marker.read_text())
        for name, frame in geffect_frames(run_dir, method).items():
            parts[name].append(frame)
        parts["token_attribution"].append(read_parquet(run_dir / "study" / "attribution.parquet"))
        summary = run_dir / "eval" / "summary.json"
        if summary.is_file():
            row = metric_row(method, json.loads(summary.read_text()), keys=summary_keys)
            row.update(train_s=info.get("train_s"), eval_s=info.get("eval_s"), steps=info.get("global_step"))
            metrics.append(row)
        parts["trajectory"].append(trajectory_frame(run_dir, method, info.get("global_step"), start, trajectory_keys))
    frames = {name: pd.concat([p for p in ps if not p.empty], ignore_index=True)
              if any(not p.empty for p in ps) else pd.DataFrame() for name, ps in parts.items()}
    layers = frames["geffect_layers"]
    if not layers.empty:
        empty = [g for g, v in layers.groupby("group")["value"] if (v == 0).all()]
        if empty:  # e.g. lm_head tied to embed: the tracker counts both uses in "embed"
            logger.info("groups with no own parameters (tied or frozen) left out of the plots: %s", empty)
            layers = frames["geffect_layers"] = layers[~layers["group"].isin(empty)].reset_index(drop=True)
    frames["mask_density"] = read_parquet(out / "masks" / "mask_density.parquet")
    frames["metrics"] = pd.DataFrame(metrics)
    return frames
