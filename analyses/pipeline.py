"""The G-effect study: prepare models, unlearn with every method, evaluate, collect, report.

``python -m analyses tofu`` / ``muse`` / ``wmdp`` are the command lines (:mod:`analyses.cli`);
this module is the library behind them, the same for every benchmark::

    from analyses.pipeline import StudyConfig, run_study
    summary = run_study(StudyConfig(methods=["ga", "satimp"], output_dir="outputs/mini"))
    from analyses.studies.muse import MuseStudyConfig
    summary = run_study(MuseStudyConfig(methods=["ga", "npo"], output_dir="outputs/muse_mini"))

The config's class names the benchmark (:func:`analyses.studies.benchmark_for`), which
supplies data, default models, evaluation, metrics and the sanity gate
(:class:`analyses.studies.base.Benchmark`). The study is a short sequence of calls into
``unlearning`` and ``geffect``; each stage is cached in the output folder under a key derived
from the config fields it declares (:mod:`analyses.config`) plus its upstream stages' keys, so
a re-run with the same arguments reuses it and a crash loses no finished stage:

1. models: the benchmark's default target and retain models (cached by recipe and data), or
   ``--model`` / ``--retain-model``;
2. references: evaluation of both models (metrics relative to the retain model, such as TOFU
   forget quality or MUSE PrivLeak, use the retain model's evaluation), the token attributions
   of a few forget items on the target, and the benchmark's extras (TOFU: rows longer than
   ``--max-length``);
3. masks: WAGLE, magnitude and random weight masks of the target (``geffect.attribute_weights``);
4. the sanity gate (:mod:`analyses.gate`): without a subject that knows the forget set the
   unlearning stages are skipped (``--allow-failed-gate`` runs them);
5. methods: for each method ``runs/<method>/``: ``unlearning.train.run_unlearning`` with one
   objective and at most one reference model, tracking G-effects, probe PG-effects and the
   objective's probe weights (``unlearning.hooks.GEffectCallback``) and evaluating at
   trajectory checkpoints; evaluation; attributions after unlearning; then an atomic
   ``study_done.json`` marker holding the stage key;
6. report: tidy frames under ``data/`` (Parquet + CSV, :mod:`analyses.frames`), figures
   (HTML + PNG), ``report.html`` and ``summary.json`` (rebuilt every run).
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import os
import platform
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses.attributions import token_attributions
from analyses.config import DEFAULT_METHODS, UNLEARNING_FIELDS, BaseStudyConfig, StudyConfig, stage_key
from analyses.findings import compute_findings
from analyses.frames import FRAMES, collect_frames
from analyses.gate import Gate
from analyses.methods import METHODS, MethodSpec, method_spec
from analyses.plots import save_figures
from analyses.report import build_sections, write_report
from analyses.studies import benchmark_for
from analyses.studies.base import read_summary, total_steps
from geffect import attribute_weights, mask_summary, module_type, parameter_groups, save_mask, weight_mask
from geffect.io import atomic_write_json, atomic_write_parquet
from unlearning import objectives
from unlearning.config import UnlearningArguments
from unlearning.data import QACollator
from unlearning.models import load_model_and_tokenizer
from unlearning.train import run_unlearning

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_METHODS", "FRAMES", "METHODS", "MethodSpec", "Study", "StudyConfig", "method_spec", "run_study"]

DONE_FILE = "study_done.json"
#: Unlearning learning rate of the study on the small default model (measured on the embedded
#: benchmark: within 20 steps GA/NPO collapse the model and SatImp forgets while keeping most
#: retain probability). With --model the unlearning default for pre-trained models applies.
STUDY_LR_DEFAULT_MODEL = 1e-3
MASKS = ("wagle", "magnitude", "random")


def _done(folder: Path, key: str) -> bool:
    marker = folder / DONE_FILE
    try:
        return marker.is_file() and json.loads(marker.read_text()).get("key") == key
    except json.JSONDecodeError:
        return False


def _mark_done(folder: Path, key: str, **info: Any) -> None:
    atomic_write_json(folder / DONE_FILE, {"key": key, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                           **info})


def peak_memory_mb() -> float:
    """Peak resident memory of this process (and waited-for children) in MiB."""
    usage = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return max(usage) / 1024.0


class Study:
    """One study run in ``config.output_dir`` (see the module docstring for the stages)."""

    def __init__(self, config: BaseStudyConfig):
        self.config = config
        self.bench = benchmark_for(config)
        self.out = Path(config.output_dir)
        self.device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if config.bf16 else torch.float32
        self.keys: dict[str, str] = {}
        self.paths: dict[str, str | None] = {}
        self.timings: dict[str, float] = {}
        self.failed: dict[str, str] = {}  # method -> error, for the report and summary
        self.gate: Gate | None = None
        self.model_report: dict[str, Any] | None = None

    @property
    def source(self):
        """The benchmark's data source (TOFU: the ``DataSource``)."""
        return getattr(self.bench, "source", None)

    @property
    def recipe(self):
        """The benchmark's default-model recipe (``None``: the benchmark's default)."""
        return getattr(self.bench, "recipe", None)

    # ---- setup -------------------------------------------------------------------------------
    def load(self, path: str):
        return load_model_and_tokenizer(path, dtype=self.dtype, device=self.device)

    def key(self, stage: str, **extra: Any) -> str:
        return stage_key(self.config, stage, self.keys, **extra)

    def spec(self, method: str) -> MethodSpec:
        return method_spec(method, self.bench.methods)

    def prepare_models(self) -> None:
        c, t0 = self.config, time.perf_counter()
        if c.model is not None:
            self.paths = {"target": c.model, "retain": c.retain_model}
            if c.retain_model is None:
                logger.warning("no --retain-model: the metrics relative to the retain model are not reported")
        else:
            self.paths, self.model_report = self.bench.prepare_default_models()
        self.keys["models"] = self.key("models", source=self.bench.source_dict(), paths=self.paths)
        self.timings["models_s"] = time.perf_counter() - t0
        logger.info("target model: %s; retain model: %s", self.paths["target"], self.paths["retain"])

    def attributions(self, model, tokenizer, name: str) -> pd.DataFrame:
        items = self.bench.examples(tokenizer, model, "forget", self.config.attribution_examples)
        return token_attributions(model, tokenizer, items, model_name=name, n_steps=self.config.attribution_steps)

    def retain_reference(self) -> Path | None:
        """The retain model's evaluation folder, when it was evaluated."""
        folder = self.out / "references" / "eval_retain"
        return folder if (folder / "summary.json").is_file() else None

    # ---- stages --------------------------------------------------------------------------------
    def references(self) -> None:
        """Evaluate the target and retain models; attributions of the target ('before'); the benchmark's extras."""
        folder, t0 = self.out / "references", time.perf_counter()
        self.keys["references"] = key = self.key("references")
        if _done(folder, key):
            logger.info("references: reusing %s", folder)
            return
        retain_reference = None
        if self.paths.get("retain"):
            model, tok = self.load(self.paths["retain"])
            logger.info("evaluating the retain model")
            self.bench.evaluate(model, tok, folder / "eval_retain", role="retain")
            retain_reference = folder / "eval_retain"
            del model
        model, tok = self.load(self.paths["target"])
        logger.info("evaluating the target model")
        self.bench.evaluate(model, tok, folder / "eval_target", retain_reference, role="target")
        atomic_write_parquet(folder / "attribution_before.parquet", self.attributions(model, tok, "before"))
        self.bench.reference_extras(model, tok, folder)
        _mark_done(folder, key, seconds=time.perf_counter() - t0)
        self.timings["references_s"] = time.perf_counter() - t0

    def masks(self) -> None:
        """WAGLE, magnitude and random masks of the target at ``wagle_density`` (+ density table)."""
        c, folder, t0 = self.config, self.out / "masks", time.perf_counter()
        self.keys["masks"] = key = self.key("masks")
        if not any(self.spec(m).mask for m in c.methods) or _done(folder, key):
            return
        model, tok = self.load(self.paths["target"])
        collate = QACollator(tok.pad_token_id)

        def batches(which: str):
            items = self.bench.examples(tok, model, which, c.wagle_calibration)
            for i in range(0, len(items), 8):
                b = collate(items[i:i + 8])
                yield {k: b[k].to(self.device) for k in ("input_ids", "attention_mask", "labels")}

        group_of = {n: g for g, names in parameter_groups(model).items() for n in names}
        rows = []
        for name in MASKS:
            calibration = (batches("forget"), batches("retain")) if name == "wagle" else (None, None)
            mask = weight_mask(attribute_weights(model, *calibration, method=name, seed=c.seed), c.wagle_density)
            save_mask(mask, folder / f"{name}.safetensors", metadata={"method": name, "density": c.wagle_density})
            rows += [(name, group_of.get(p, "other"), module_type(p, model).split(".")[0], float(m.float().mean()),
                      int(m.numel()), p) for p, m in mask.items()]
            mask_summary(mask, model).to_csv(folder / f"{name}.summary.csv", index=False)
        atomic_write_parquet(folder / "mask_density.parquet", pd.DataFrame(
            rows, columns=["mask", "group", "module", "density", "numel", "parameter"]))
        _mark_done(folder, key, seconds=time.perf_counter() - t0)
        self.timings["masks_s"] = time.perf_counter() - t0

    def unlearning_args(self, spec: MethodSpec, run_dir: Path, **overrides: Any) -> UnlearningArguments:
        """The arguments of one method's unlearning run: the study's :data:`~analyses.config.UNLEARNING_FIELDS`
        as they are, the study's fixed choices, the benchmark's data fields, then ``overrides``."""
        c = self.config
        kwargs = {name: getattr(c, name) for name in UNLEARNING_FIELDS}
        kwargs.update(
            output_dir=str(run_dir), method=spec.objective, model=self.paths["target"] if c.model else None,
            learning_rate=self.bench.learning_rate(STUDY_LR_DEFAULT_MODEL), track_geffect=True,
            geffect_groups="modules", pg_instances="probe", probe_weights=True, log_token_weights=True,
            save_strategy="no", use_cpu=self.device == "cpu", disable_tqdm=not c.progress, report_to="none",
            logging_steps=1, dataloader_num_workers=0,
            mask=str(self.out / "masks" / f"{spec.mask}.safetensors") if spec.mask else None,
            objective_kwargs=dict(spec.hparams) or None)
        return UnlearningArguments(**{**kwargs, **self.bench.unlearning_kwargs(), **overrides})

    def run_method(self, method: str) -> None:
        """Unlearn, evaluate and attribute one method; skipped when its done marker matches."""
        spec, run_dir = self.spec(method), self.out / "runs" / method
        args = self.unlearning_args(spec, run_dir)  # resolves the default learning rate
        key = self.key("methods", method=method, spec=dataclasses.asdict(spec), lr=args.learning_rate)
        if _done(run_dir, key):
            logger.info("%s: finished before, reusing %s", method, run_dir)
            return
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        model, tok = self.load(self.paths["target"])
        overrides = self.bench.method_overrides(method, spec, model)
        if overrides:
            args = self.unlearning_args(spec, run_dir, **overrides)
        objective = objectives.get(spec.objective, **args.objective_hparams())
        trajectory = self.bench.trajectory_callback(tok, self.checkpoints(tok, model), self.retain_reference())
        result = run_unlearning(args, model, tok, objective=objective, callbacks=[trajectory],
                                **self.bench.run_kwargs(tok, model, objective))
        train_s, t1 = time.perf_counter() - t0, time.perf_counter()
        self.bench.evaluate(result.model, tok, run_dir / "eval", self.retain_reference())
        eval_s = time.perf_counter() - t1
        atomic_write_parquet(run_dir / "study" / "attribution.parquet", self.attributions(result.model, tok, method))
        for ckpt in run_dir.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
        _mark_done(run_dir, key, train_s=train_s, eval_s=eval_s, seconds=time.perf_counter() - t0,
                   global_step=result.run_config.get("global_step"))
        logger.info("%s: done in %.1fs (train %.1fs, eval %.1fs)", method, time.perf_counter() - t0, train_s, eval_s)

    def total_steps(self, tokenizer=None, model=None) -> int:
        """Optimizer steps of one unlearning run (the Trainer's count, one process)."""
        return total_steps(self.bench.n_forget_items(tokenizer, model), self.config)

    def checkpoints(self, tokenizer=None, model=None) -> list[int]:
        """Intermediate evaluation steps of the trade-off trajectory (the final one is the run's own evaluation)."""
        total, points = self.total_steps(tokenizer, model), self.config.trajectory_points
        return sorted({round(total * k / points) for k in range(1, points)} - {0, total})

    def check_gate(self) -> Gate:
        folder = self.out / "references"
        self.gate = self.bench.gate(read_summary(folder / "eval_target") or {}, read_summary(folder / "eval_retain"))
        (logger.info if self.gate.passed else logger.error)("%s", self.gate.text())
        return self.gate

    # ---- report --------------------------------------------------------------------------------
    def report(self, frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
        t0, data_dir, bench = time.perf_counter(), self.out / "data", self.bench
        for name, frame in frames.items():
            if not frame.empty:
                atomic_write_parquet(data_dir / f"{name}.parquet", frame)
                frame.to_csv(data_dir / f"{name}.csv", index=False)
        findings = compute_findings(frames, gate=self.gate, budget=self.config.utility_budget, keys=bench.findings,
                                    **bench.axes.finding_labels())
        sections = build_sections(frames, budget=self.config.utility_budget, options=bench.plot_options(),
                                  captions=bench.captions)
        figures = save_figures({s.name: s.figure for s in sections}, self.out / "figures", png=self.config.png)
        config = {"study": self.config.to_dict(), "resolved": {"data": bench.source_dict(), "device": self.device,
                                                                 "models": self.paths, "stage_keys": self.keys},
                  "methods": {m: dataclasses.asdict(self.spec(m)) for m in self.config.methods}}
        if bench.name != "tofu":
            config["resolved"]["benchmark"] = bench.name
        run_cfg = self.out / "runs" / self.config.methods[0] / "run_config.json"
        if run_cfg.is_file():
            rc = json.loads(run_cfg.read_text())
            config["unlearning_example"] = {k: rc.get(k) for k in ("learning_rate", "global_batch_size", "n_forget",
                                                                   "n_retain", "geffect_probe_size", "versions")}
        metric_cols = [c for c in bench.metric_columns if c in frames["metrics"].columns]
        write_report(self.out / "report.html", sections, title=bench.title,
                     findings=findings, metrics=frames["metrics"][metric_cols] if metric_cols else None,
                     config=config, intro=self.intro(), notes=self.notes(), banner=self.banner())
        self.timings["report_s"] = time.perf_counter() - t0
        return {"findings": [f.to_dict() for f in findings],
                "figures": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in figures.items()},
                "config": config, **bench.summary_extras(),
                "gate": self.gate.to_dict() if self.gate else None, "default_models": self.model_report}

    def banner(self) -> tuple[str, str] | None:
        """The sanity gate's verdict for the top of the report: (kind, text)."""
        if self.gate is None:
            return None
        if self.gate.passed:
            return "ok", self.gate.text()
        skipped = "" if self.config.allow_failed_gate else " The unlearning stages were not run (--allow-failed-gate runs them)."
        return "fail", self.gate.text() + skipped

    def intro(self) -> str:
        c = self.config
        return html.escape(
            f"Unlearning {self.bench.describe()} with {len(c.methods)} methods "
            f"({', '.join(c.methods)}); G-effects tracked every {c.geffect_every} step(s) on "
            f"{c.geffect_probe_size} forget and {c.geffect_probe_size} retain probe instances. Sign convention: a "
            "G-effect > 0 means the step lowers the probe risk (Wang et al., ICLR 2025).")

    def notes(self) -> list[str]:
        """Caveats the reader needs next to the findings (tied embeddings, the benchmark's, failures)."""
        notes = []
        cfg = Path(self.paths.get("target") or "") / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("tie_word_embeddings"):
            notes.append("The model ties its input embedding and LM head: the G-effect of both uses is counted in "
                         "the 'embed' group (and the 'embed' bucket), so 'embed' here is not the paper's "
                         "embedding-only group.")
        notes += self.bench.notes(self.paths)
        notes += [f"{method} failed and is missing from the plots: {error}" for method, error in self.failed.items()]
        return notes

    def run(self) -> dict[str, Any]:
        """All stages; returns (and writes) the summary."""
        t0, c = time.perf_counter(), self.config
        self.out.mkdir(parents=True, exist_ok=True)
        for m in c.methods:
            self.spec(m)  # fail fast on a typo
        bar = tqdm(total=4 + len(c.methods), desc="study", disable=not c.progress, unit="stage")
        for stage in (self.prepare_models, self.references, self.masks):
            stage()
            bar.update()
        run_methods = self.check_gate().passed or c.allow_failed_gate
        for method in c.methods if run_methods else []:
            bar.set_postfix_str(method)
            t1 = time.perf_counter()
            try:
                self.run_method(method)
            except Exception as err:  # keep the other methods; the report shows what finished
                logger.exception("%s failed; continuing with the other methods", method)
                self.failed[method] = f"{type(err).__name__}: {err}"
            self.timings[f"method_{method}_s"] = time.perf_counter() - t1
            bar.update()
        frames = collect_frames(self.out, list(c.methods), DONE_FILE, summary_keys=self.bench.summary_keys,
                                trajectory_keys=self.bench.trajectory_keys, reference_fill=self.bench.reference_fill)
        rep = self.report(frames)
        bar.update()
        bar.close()
        self.timings["total_s"] = time.perf_counter() - t0
        summary = {"output_dir": str(self.out), "report": str(self.out / "report.html"), "timings": self.timings,
                   "peak_memory_mb": peak_memory_mb(), "cpu_s": cpu_seconds(), "metrics": frames["metrics"].to_dict("records"),
                   "failed": self.failed, "gate_passed": self.gate.passed, **rep,
                   "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                            "device": self.device}}
        atomic_write_json(self.out / "summary.json", summary)
        logger.info("study finished in %.1fs wall, %.1fs CPU (peak memory %.0f MiB): %s", self.timings["total_s"],
                    summary["cpu_s"], summary["peak_memory_mb"], self.out / "report.html")
        return summary


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads), in seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_study(config: BaseStudyConfig) -> dict[str, Any]:
    """Run (or resume) the study described by ``config`` on its benchmark; returns the summary dict."""
    return Study(config).run()
