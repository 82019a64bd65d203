"""TOFU (Maini et al. 2024) as a study benchmark: question/answer rows, ``unlearning.evaluate``'s metrics.

Data: ``unlearning.data.DataSource`` (embedded benchmark, a local TOFU folder or
``locuslab/TOFU``; ``--max-authors`` subsets); default models:
``unlearning.models.prepare_default_models`` (target fine-tuned on ``full``, retain model on
``retainYY``); evaluation: ``unlearning.evaluate.evaluate_model`` (probability, ROUGE-L, truth
ratio, extraction strength, MIA; forget quality = KS test against the retain model's forget
truth ratios); trajectories: ``unlearning.hooks.EvalCallback``; sanity gate:
:func:`analyses.gate.check_subject` (forget ES and probability of target vs retain model).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from analyses.config import StudyConfig
from analyses.frames import METRIC_COLUMNS, SUMMARY_KEYS, TRAJECTORY_KEYS
from analyses.gate import Gate, check_subject
from analyses.studies.base import Axes, Benchmark
from geffect.io import atomic_write_json
from unlearning.data import DataSource, QADataset, get_template, retain_split_for
from unlearning.evaluate import ALL_SETS, evaluate_model, load_eval_sets
from unlearning.hooks import EvalCallback
from unlearning.models import TINY_EMBEDDED, DefaultRecipe, prepare_default_models, tiny_recipe

logger = logging.getLogger(__name__)

__all__ = ["TofuBenchmark"]

class TofuBenchmark(Benchmark):
    """TOFU forget / retain splits of question-answer rows (see the module docstring)."""

    name = "tofu"
    config_class = StudyConfig
    summary_keys = SUMMARY_KEYS
    metric_columns = METRIC_COLUMNS
    trajectory_keys = TRAJECTORY_KEYS
    reference_fill = {"retain": {"forget_quality": 1.0}}  # KS test of the retain model against itself
    axes = Axes()

    def __init__(self, config: StudyConfig):
        super().__init__(config)
        self.out = Path(config.output_dir)
        self.source, self.recipe = self._data()

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

    # ---- data and models ----------------------------------------------------------------------
    def describe(self) -> str:
        return f"{self.config.split} of {self.source.describe()}"

    def source_dict(self) -> dict[str, Any]:
        return self.source.to_dict()

    def prepare_default_models(self) -> tuple[dict[str, str | None], dict[str, Any]]:
        c = self.config
        prepared = prepare_default_models(self.source, c.split, recipe=self.recipe, cache_dir=c.cache_dir,
                                          progress=c.progress)
        self.model_report = prepared.report()
        return {"target": str(prepared.target), "retain": c.retain_model or str(prepared.retain)}, self.model_report

    def unlearning_kwargs(self) -> dict[str, Any]:
        c = self.config
        return dict(data=self.source.name, split=c.split, max_authors=self.source.max_authors,
                    retain_holdout=c.retain_holdout, retain_holdout_rows=c.eval_subset)

    def run_kwargs(self, tokenizer, model, objective) -> dict[str, Any]:
        return {"data": self.source}

    def qa_dataset(self, tokenizer, model, split: str, n: int | None) -> QADataset:
        return QADataset(self.source.rows(split, limit=n), tokenizer, template=get_template(model),
                         max_length=self.config.max_length)

    def examples(self, tokenizer, model, which: str, n: int | None):
        split = self.config.split if which == "forget" else retain_split_for(self.config.split)
        ds = self.qa_dataset(tokenizer, model, split, n)
        return [ds[i] for i in range(len(ds))]

    def n_forget_items(self, tokenizer=None, model=None) -> int:
        return len(self.source.load_split(self.config.split))

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self, model, tokenizer, out_dir: Path, retain_reference: Path | None = None, *,
                 role: str = "model") -> dict[str, Any]:
        c = self.config
        result = evaluate_model(model, tokenizer, self.source, c.split, retain_stats=retain_reference,
                                batch_size=c.eval_batch_size, max_new_tokens=c.max_new_tokens,
                                max_length=c.max_length, subset=c.eval_subset, progress=False)
        result.summary["settings"] = {"subset": c.eval_subset, "max_new_tokens": c.max_new_tokens}
        result.save(out_dir)
        return result.summary

    def trajectory_callback(self, tokenizer, at_steps: Sequence[int], retain_reference: Path | None):
        c = self.config
        return EvalCallback(tokenizer, self.source, c.split, at_steps=at_steps, per_epoch=False,
                            subset=c.eval_subset, batch_size=c.eval_batch_size, max_new_tokens=c.max_new_tokens,
                            max_length=c.max_length, retain_stats=retain_reference)

    def gate(self, target: Mapping[str, Any], retain: Mapping[str, Any] | None) -> Gate:
        c = self.config
        return check_subject(target or {}, retain, min_es=c.gate_min_es, es_gap=c.gate_es_gap,
                             prob_ratio=c.gate_prob_ratio)

    # ---- extras -------------------------------------------------------------------------------
    def reference_extras(self, model, tokenizer, folder: Path) -> None:
        atomic_write_json(folder / "truncation.json", self.truncation(model, tokenizer))

    def truncation(self, model, tokenizer) -> dict[str, Any]:
        """Rows longer than ``max_length`` (their prompt is cut from the left) per split the study reads."""
        c = self.config
        splits = {"forget (train)": c.split, "retain (train)": retain_split_for(c.split)}
        splits.update({name: split for name, (split, _) in
                       load_eval_sets(self.source, c.split, sets=ALL_SETS, subset=c.eval_subset).items()})
        counts = {}
        for name, split in splits.items():
            ds = self.qa_dataset(tokenizer, model, split, c.eval_subset if name in ALL_SETS else None)
            counts[name] = {"split": split, "total": len(ds), **ds.truncated}
        return {"max_length": c.max_length, "sets": counts, "rows_cut": sum(v["rows"] for v in counts.values())}

    def truncation_info(self) -> dict[str, Any]:
        path = self.out / "references" / "truncation.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def notes(self, paths: Mapping[str, str | None]) -> list[str]:
        notes = []
        if not paths.get("retain"):
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
        return notes

    def summary_extras(self) -> dict[str, Any]:
        return {"truncation": self.truncation_info()}
