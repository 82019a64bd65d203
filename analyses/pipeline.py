"""The G-effect study: prepare models, unlearn with every method, evaluate, collect, report.

``python -m analyses.geffect_tofu`` is the command line; this module is the library behind it::

    from analyses.pipeline import StudyConfig, run_study
    summary = run_study(StudyConfig(methods=["ga", "satimp"], output_dir="outputs/mini"))

The study is a short sequence of calls into ``unlearning`` and ``geffect``; each stage is cached
in the output folder under a key derived from the config fields it declares
(:mod:`analyses.config`) plus its upstream stages' keys, so a re-run with the same arguments
reuses it and a crash loses no finished stage:

1. models: the target and retain models (``unlearning.models.prepare_default_models``, cached
   by recipe and data), or ``--model`` / ``--retain-model``;
2. references: evaluation of both models (the retain model's forget truth ratios give forget
   quality), the token attributions of a few forget answers on the target, and the count of
   rows longer than ``--max-length``;
3. masks: WAGLE, magnitude and random weight masks of the target (``geffect.attribute_weights``);
4. methods: for each method ``runs/<method>/``: ``unlearning.train.run_unlearning`` with one
   objective and at most one reference model, tracking G-effects, probe PG-effects and the
   objective's probe weights (``unlearning.hooks.GEffectCallback``); evaluation; attributions
   after unlearning; then an atomic ``study_done.json`` marker holding the stage key;
5. report: tidy frames under ``data/`` (Parquet + CSV, :mod:`analyses.frames`), figures
   (HTML + PNG), ``report.html`` and ``summary.json`` (rebuilt every run).
"""
from __future__ import annotations

import dataclasses
import html
import json
import logging
import math
import os
import platform
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from analyses.attributions import token_attributions
from analyses.config import DEFAULT_METHODS, StudyConfig, stage_key
from analyses.findings import compute_findings
from analyses.frames import FRAMES, METRIC_COLUMNS, collect_frames
from analyses.gate import Gate, check_subject
from analyses.plots import save_figures
from analyses.report import build_sections, write_report
from geffect import attribute_weights, mask_summary, module_type, parameter_groups, save_mask, weight_mask
from geffect.io import atomic_write_json, atomic_write_parquet
from unlearning import objectives
from unlearning.config import UnlearningArguments
from unlearning.data import DataSource, QACollator, QADataset, get_template, retain_split_for
from unlearning.evaluate import ALL_SETS, evaluate_model, load_eval_sets
from unlearning.hooks import EvalCallback
from unlearning.models import TINY_EMBEDDED, DefaultRecipe, load_model_and_tokenizer, prepare_default_models, tiny_recipe
from unlearning.train import run_unlearning

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_METHODS", "FRAMES", "METHODS", "MethodSpec", "Study", "StudyConfig", "method_spec", "run_study"]

DONE_FILE = "study_done.json"
#: Unlearning learning rate of the study on the small default model (measured on the embedded
#: benchmark: within 20 steps GA/NPO collapse the model and SatImp forgets while keeping most
#: retain probability). With --model the unlearning default for pre-trained models applies.
STUDY_LR_DEFAULT_MODEL = 1e-3
MASKS = ("wagle", "magnitude", "random")


@dataclass(frozen=True)
class MethodSpec:
    """A study method: the registered objective it trains with, extra hparams and an optional mask."""

    objective: str
    hparams: dict = field(default_factory=dict)
    mask: str | None = None  # name of a study mask ("wagle") whose gradient mask is applied


METHODS = {name: MethodSpec(name) for name in DEFAULT_METHODS if not name.endswith("_gd") or name == "gd"}
METHODS["wagle_gd"] = MethodSpec("gd", mask="wagle")
METHODS["random_gd"] = MethodSpec("gd", mask="random")  # WAGLE's random-mask baseline at the same density
#: SatImp's granularity ablation (``--full``): the same weight at instance / group / batch granularity
ABLATION = {f"satimp_{g}": MethodSpec("satimp", {"granularity": g}) for g in ("instance", "group", "batch")}
METHODS.update(ABLATION)


def method_spec(name: str) -> MethodSpec:
    """The spec of a study method; any registered objective name is accepted as itself."""
    if name in METHODS:
        return METHODS[name]
    if name in objectives.available():
        return MethodSpec(name)
    raise ValueError(f"unknown method {name!r}; use one of {sorted(set(METHODS) | set(objectives.available()))} "
                     "(wagle_gd = GD restricted to the WAGLE weight mask)")


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

    def __init__(self, config: StudyConfig):
        self.config = config
        self.out = Path(config.output_dir)
        self.device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if config.bf16 else torch.float32
        self.source, self.recipe = self._data()
        self.keys: dict[str, str] = {}
        self.paths: dict[str, str | None] = {}
        self.timings: dict[str, float] = {}
        self.failed: dict[str, str] = {}  # method -> error, for the report and summary
        self.gate: Gate | None = None

    # ---- setup -------------------------------------------------------------------------------
    def _data(self) -> tuple[DataSource, DefaultRecipe | None]:
        """The data source and default-model recipe: ``--quick`` trains tiny models on a few authors."""
        c = self.config
        max_authors = c.max_authors
        if c.quick and c.model is None:
            if c.data == "embedded":
                return DataSource(embedded=TINY_EMBEDDED, max_authors=max_authors, forget_split=c.split), tiny_recipe()
            recipe = tiny_recipe(include_utility=False)
            max_authors = 4 if max_authors is None else max_authors
            if c.split == "forget10":  # the default: 20 forget authors would leave no retain author
                logger.warning("--quick on %s: unlearning forget01 (2 authors) instead of forget10, so that %d "
                               "authors leave some to retain; pass --split to choose", c.data, max_authors)
                c.split = "forget01"
            return DataSource(c.data, max_authors=max_authors, forget_split=c.split), recipe
        return DataSource(c.data, max_authors=max_authors, forget_split=c.split), None

    def load(self, path: str):
        return load_model_and_tokenizer(path, dtype=self.dtype, device=self.device)

    def key(self, stage: str, **extra: Any) -> str:
        return stage_key(self.config, stage, self.keys, **extra)

    def prepare_models(self) -> None:
        c, t0 = self.config, time.perf_counter()
        if c.model is not None:
            self.paths = {"target": c.model, "retain": c.retain_model}
            if c.retain_model is None:
                logger.warning("no --retain-model: forget quality (KS test against the retain model) is not reported")
        else:
            prepared = prepare_default_models(self.source, c.split, recipe=self.recipe, cache_dir=c.cache_dir,
                                              progress=c.progress)
            self.paths = {"target": str(prepared.target), "retain": c.retain_model or str(prepared.retain)}
            self.model_report = prepared.report()
        self.keys["models"] = self.key("models", source=self.source.to_dict(), paths=self.paths)
        self.timings["models_s"] = time.perf_counter() - t0
        logger.info("target model: %s; retain model: %s", self.paths["target"], self.paths["retain"])

    # ---- data helpers --------------------------------------------------------------------------
    def examples(self, tokenizer, model, split: str, n: int) -> QADataset:
        return QADataset(self.source.rows(split, limit=n), tokenizer, template=get_template(model),
                         max_length=self.config.max_length)

    def evaluate(self, model, tokenizer, out_dir: Path, retain_stats=None) -> None:
        c = self.config
        result = evaluate_model(model, tokenizer, self.source, c.split, retain_stats=retain_stats,
                                batch_size=c.eval_batch_size, max_new_tokens=c.max_new_tokens,
                                max_length=c.max_length, subset=c.eval_subset, progress=False)
        result.summary["settings"] = {"subset": c.eval_subset, "max_new_tokens": c.max_new_tokens}
        result.save(out_dir)

    def attributions(self, model, tokenizer, name: str) -> pd.DataFrame:
        ds = self.examples(tokenizer, model, self.config.split, self.config.attribution_examples)
        return token_attributions(model, tokenizer, [ds[i] for i in range(len(ds))], model_name=name,
                                  n_steps=self.config.attribution_steps)

    def truncation(self, model, tokenizer) -> dict[str, Any]:
        """Rows longer than ``max_length`` (their prompt is cut from the left) per split the study reads."""
        c = self.config
        splits = {"forget (train)": c.split, "retain (train)": retain_split_for(c.split)}
        splits.update({name: split for name, (split, _) in
                       load_eval_sets(self.source, c.split, sets=ALL_SETS, subset=c.eval_subset).items()})
        counts = {}
        for name, split in splits.items():
            ds = self.examples(tokenizer, model, split, c.eval_subset if name in ALL_SETS else None)
            counts[name] = {"split": split, "total": len(ds), **ds.truncated}
        return {"max_length": c.max_length, "sets": counts, "rows_cut": sum(v["rows"] for v in counts.values())}

    # ---- stages --------------------------------------------------------------------------------
    def references(self) -> None:
        """Evaluate the target and retain models; attributions of the target ('before'); truncation counts."""
        folder, t0 = self.out / "references", time.perf_counter()
        self.keys["references"] = key = self.key("references")
        if _done(folder, key):
            logger.info("references: reusing %s", folder)
            return
        retain_stats = None
        if self.paths.get("retain"):
            model, tok = self.load(self.paths["retain"])
            logger.info("evaluating the retain model")
            self.evaluate(model, tok, folder / "eval_retain")
            retain_stats = folder / "eval_retain"
            del model
        model, tok = self.load(self.paths["target"])
        logger.info("evaluating the target model")
        self.evaluate(model, tok, folder / "eval_target", retain_stats=retain_stats)
        atomic_write_parquet(folder / "attribution_before.parquet", self.attributions(model, tok, "before"))
        atomic_write_json(folder / "truncation.json", self.truncation(model, tok))
        _mark_done(folder, key, seconds=time.perf_counter() - t0)
        self.timings["references_s"] = time.perf_counter() - t0

    def masks(self) -> None:
        """WAGLE, magnitude and random masks of the target at ``wagle_density`` (+ density table)."""
        c, folder, t0 = self.config, self.out / "masks", time.perf_counter()
        self.keys["masks"] = key = self.key("masks")
        if not any(method_spec(m).mask for m in c.methods) or _done(folder, key):
            return
        model, tok = self.load(self.paths["target"])
        collate = QACollator(tok.pad_token_id)

        def batches(split: str):
            ds = self.examples(tok, model, split, c.wagle_calibration)
            for i in range(0, len(ds), 8):
                b = collate([ds[j] for j in range(i, min(i + 8, len(ds)))])
                yield {k: b[k].to(self.device) for k in ("input_ids", "attention_mask", "labels")}

        group_of = {n: g for g, names in parameter_groups(model).items() for n in names}
        rows = []
        for name in MASKS:
            calibration = (batches(c.split), batches(retain_split_for(c.split))) if name == "wagle" else (None, None)
            mask = weight_mask(attribute_weights(model, *calibration, method=name, seed=c.seed), c.wagle_density)
            save_mask(mask, folder / f"{name}.safetensors", metadata={"method": name, "density": c.wagle_density})
            rows += [(name, group_of.get(p, "other"), module_type(p, model).split(".")[0], float(m.float().mean()),
                      int(m.numel()), p) for p, m in mask.items()]
            mask_summary(mask, model).to_csv(folder / f"{name}.summary.csv", index=False)
        atomic_write_parquet(folder / "mask_density.parquet", pd.DataFrame(
            rows, columns=["mask", "group", "module", "density", "numel", "parameter"]))
        _mark_done(folder, key, seconds=time.perf_counter() - t0)
        self.timings["masks_s"] = time.perf_counter() - t0

    def unlearning_args(self, spec: MethodSpec, run_dir: Path) -> UnlearningArguments:
        c = self.config
        lr = c.lr if c.lr is not None else (STUDY_LR_DEFAULT_MODEL if c.model is None else None)
        return UnlearningArguments(
            output_dir=str(run_dir), method=spec.objective, model=self.paths["target"] if c.model else None,
            data=self.source.name, split=c.split, max_authors=self.source.max_authors, max_length=c.max_length,
            num_train_epochs=c.epochs, max_steps=c.steps or -1, per_device_train_batch_size=c.batch_size,
            gradient_accumulation_steps=c.grad_accum, learning_rate=lr, track_geffect=True,
            geffect_every=c.geffect_every, geffect_probe_size=c.probe_size, geffect_groups="modules",
            pg_effect=c.pg_effects,
            pg_instances="probe", probe_weights=True, log_token_weights=True, save_strategy="no", seed=c.seed,
            bf16=c.bf16, use_cpu=self.device == "cpu", disable_tqdm=not c.progress, report_to="none",
            logging_steps=1, dataloader_num_workers=0, retain_holdout=c.retain_holdout,
            retain_holdout_rows=c.eval_subset,
            mask=str(self.out / "masks" / f"{spec.mask}.safetensors") if spec.mask else None,
            objective_kwargs=json.dumps(spec.hparams) if spec.hparams else None)

    def run_method(self, method: str) -> None:
        """Unlearn, evaluate and attribute one method; skipped when its done marker matches."""
        spec, run_dir = method_spec(method), self.out / "runs" / method
        args = self.unlearning_args(spec, run_dir)  # resolves the default learning rate
        key = self.key("methods", method=method, spec=dataclasses.asdict(spec), lr=args.learning_rate)
        if _done(run_dir, key):
            logger.info("%s: finished before, reusing %s", method, run_dir)
            return
        shutil.rmtree(run_dir, ignore_errors=True)
        t0 = time.perf_counter()
        model, tok = self.load(self.paths["target"])
        objective = objectives.get(spec.objective, **args.objective_hparams())
        trajectory = EvalCallback(tok, self.source, self.config.split, at_steps=self.checkpoints(), per_epoch=False,
                                  subset=self.config.eval_subset, batch_size=self.config.eval_batch_size,
                                  max_new_tokens=self.config.max_new_tokens, max_length=self.config.max_length,
                                  retain_stats=self.retain_stats())
        result = run_unlearning(args, model, tok, objective=objective, data=self.source, callbacks=[trajectory])
        train_s, t1 = time.perf_counter() - t0, time.perf_counter()
        self.evaluate(result.model, tok, run_dir / "eval", retain_stats=self.retain_stats())
        eval_s = time.perf_counter() - t1
        atomic_write_parquet(run_dir / "study" / "attribution.parquet", self.attributions(result.model, tok, method))
        for ckpt in run_dir.glob("checkpoint-*"):
            shutil.rmtree(ckpt, ignore_errors=True)
        _mark_done(run_dir, key, train_s=train_s, eval_s=eval_s, seconds=time.perf_counter() - t0,
                   global_step=result.run_config.get("global_step"))
        logger.info("%s: done in %.1fs (train %.1fs, eval %.1fs)", method, time.perf_counter() - t0, train_s, eval_s)

    def total_steps(self) -> int:
        """Optimizer steps of one unlearning run (the Trainer's count, one process)."""
        c = self.config
        if c.steps:
            return c.steps
        per_epoch = max(math.ceil(len(self.source.load_split(c.split)) / c.batch_size) // c.grad_accum, 1)
        return math.ceil(c.epochs * per_epoch)

    def checkpoints(self) -> list[int]:
        """Intermediate evaluation steps of the trade-off trajectory (the final one is the run's own evaluation)."""
        total, points = self.total_steps(), self.config.trajectory_points
        return sorted({round(total * k / points) for k in range(1, points)} - {0, total})

    def check_gate(self) -> Gate:
        folder = self.out / "references"
        read = lambda name: (json.loads((folder / f"eval_{name}" / "summary.json").read_text())  # noqa: E731
                             if (folder / f"eval_{name}" / "summary.json").is_file() else None)
        c = self.config
        self.gate = check_subject(read("target") or {}, read("retain"), min_es=c.gate_min_es, es_gap=c.gate_es_gap,
                                  prob_ratio=c.gate_prob_ratio)
        (logger.info if self.gate.passed else logger.error)("%s", self.gate.text())
        return self.gate

    def retain_stats(self) -> Path | None:
        folder = self.out / "references" / "eval_retain"
        return folder if (folder / "summary.json").is_file() else None

    # ---- report --------------------------------------------------------------------------------
    def report(self, frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
        t0, data_dir = time.perf_counter(), self.out / "data"
        for name, frame in frames.items():
            if not frame.empty:
                atomic_write_parquet(data_dir / f"{name}.parquet", frame)
                frame.to_csv(data_dir / f"{name}.csv", index=False)
        findings = compute_findings(frames, gate=self.gate, budget=self.config.utility_budget)
        sections = build_sections(frames)
        figures = save_figures({s.name: s.figure for s in sections}, self.out / "figures", png=self.config.png)
        config = {"study": self.config.to_dict(), "resolved": {"data": self.source.to_dict(), "device": self.device,
                                                                 "models": self.paths, "stage_keys": self.keys},
                  "methods": {m: dataclasses.asdict(method_spec(m)) for m in self.config.methods}}
        run_cfg = self.out / "runs" / self.config.methods[0] / "run_config.json"
        if run_cfg.is_file():
            rc = json.loads(run_cfg.read_text())
            config["unlearning_example"] = {k: rc.get(k) for k in ("learning_rate", "global_batch_size", "n_forget",
                                                                   "n_retain", "geffect_probe_size", "versions")}
        metric_cols = [c for c in METRIC_COLUMNS if c in frames["metrics"].columns]
        write_report(self.out / "report.html", sections, title="G-effect study of LLM unlearning objectives",
                     findings=findings, metrics=frames["metrics"][metric_cols] if metric_cols else None,
                     config=config, intro=self.intro(), notes=self.notes(), banner=self.banner())
        self.timings["report_s"] = time.perf_counter() - t0
        return {"findings": [f.to_dict() for f in findings],
                "figures": {k: {kk: str(vv) for kk, vv in v.items()} for k, v in figures.items()},
                "config": config, "truncation": self.truncation_info(),
                "gate": self.gate.to_dict() if self.gate else None, "default_models": getattr(self, "model_report", None)}

    def banner(self) -> tuple[str, str] | None:
        """The sanity gate's verdict for the top of the report: (kind, text)."""
        if self.gate is None:
            return None
        if self.gate.passed:
            return "ok", self.gate.text()
        skipped = "" if self.config.allow_failed_gate else " The unlearning stages were not run (--allow-failed-gate runs them)."
        return "fail", self.gate.text() + skipped

    def truncation_info(self) -> dict[str, Any]:
        path = self.out / "references" / "truncation.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def intro(self) -> str:
        c = self.config
        return html.escape(
            f"Unlearning {c.split} of {self.source.describe()} with {len(c.methods)} methods "
            f"({', '.join(c.methods)}); G-effects tracked every {c.geffect_every} step(s) on "
            f"{c.probe_size} forget and {c.probe_size} retain probe instances. Sign convention: a G-effect "
            "> 0 means the step lowers the probe risk (Wang et al., ICLR 2025).")

    def notes(self) -> list[str]:
        """Caveats the reader needs next to the findings (tied embeddings, truncation, failures)."""
        notes = []
        cfg = Path(self.paths.get("target") or "") / "config.json"
        if cfg.is_file() and json.loads(cfg.read_text()).get("tie_word_embeddings"):
            notes.append("The model ties its input embedding and LM head: the G-effect of both uses is counted in "
                         "the 'embed' group (and the 'embed' bucket), so 'embed' here is not the paper's "
                         "embedding-only group.")
        if not self.paths.get("retain"):
            notes.append("No retain model was given: forget quality is not reported.")
        report = getattr(self, "model_report", None) or {}
        if report.get("target") and report.get("retain"):
            def part(name: str) -> str:
                r = report[name]
                return (f"{name} model: forget ES {r['forget']['extraction_strength']:.3f}, teacher-forced forget "
                        f"accuracy {r['forget']['accuracy']:.3f}, retain ES {r['retain']['extraction_strength']:.3f} "
                        f"after {r['epochs']} epochs ({'memorised' if r['reached'] else 'epoch cap reached'})")
            notes.append("Default models, measured when built (all rows of each split): " + "; ".join(
                part(n) for n in ("target", "retain")) + f"; {report.get('build_s', float('nan')):.0f} s to build.")
        cut = self.truncation_info()
        if cut.get("rows_cut"):
            sets = [v for v in cut["sets"].values() if v["rows"]]
            per_set = ", ".join(f"{v['rows']} of {v['total']} rows of {v['split']}" for v in sets)
            answers = sum(v["answer_cut"] for v in sets)
            notes.append(f"{cut['rows_cut']} rows are longer than --max-length {cut['max_length']} tokens ({per_set}): "
                         "they lose the start of their prompt" + (f", and {answers} answers longer than that on their "
                         "own are cut at the end" if answers else "") + "; no row was dropped.")
        else:
            notes.append(f"No row is longer than --max-length {self.config.max_length} tokens (none was cut).")
        notes += [f"{method} failed and is missing from the plots: {error}" for method, error in self.failed.items()]
        return notes

    def run(self) -> dict[str, Any]:
        """All stages; returns (and writes) the summary."""
        t0, c = time.perf_counter(), self.config
        self.out.mkdir(parents=True, exist_ok=True)
        for m in c.methods:
            method_spec(m)  # fail fast on a typo
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
        frames = collect_frames(self.out, list(c.methods), DONE_FILE)
        rep = self.report(frames)
        bar.update()
        bar.close()
        self.timings["total_s"] = time.perf_counter() - t0
        summary = {"output_dir": str(self.out), "report": str(self.out / "report.html"), "timings": self.timings,
                   "peak_memory_mb": peak_memory_mb(), "metrics": frames["metrics"].to_dict("records"),
                   "failed": self.failed, "gate_passed": self.gate.passed, **rep,
                   "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
                            "device": self.device}}
        atomic_write_json(self.out / "summary.json", summary)
        logger.info("study finished in %.1fs (peak memory %.0f MiB): %s", self.timings["total_s"],
                    summary["peak_memory_mb"], self.out / "report.html")
        return summary


def run_study(config: StudyConfig) -> dict[str, Any]:
    """Run (or resume) the study described by ``config``; returns the summary dict."""
    return Study(config).run()
