"""MUSE (Shi et al. 2024) as a study benchmark: unlearn news documents, measure VerbMem, KnowMem, PrivLeak.

Data (``--data``): the embedded news corpus (``unlearning.data.embedded.news``), a folder in
``swj0419/muse_bench``'s layout (``<folder>/raw/forget.json``, ``verbmem/forget.json``,
``knowmem/forget_qa.json``, ...), or ``muse-bench/MUSE-News`` / ``MUSE-Books``. Unlearning
forgets the chunks of ``raw/forget`` with ``raw/<--retain-split>`` (retain1, as MUSE's
baselines) as retain data.

Metrics (``unlearning.evaluate_muse``): ``verbmem_f`` (ROUGE-L F1 of continuations of the forget
documents), ``knowmem_f`` / ``knowmem_r`` (ROUGE-L F1 of in-context answers about the forget /
retain documents; ``knowmem_r`` is MUSE's utility) and ``privleak`` (Min-40% forget-vs-holdout
AUC relative to the retain model's, in percent: about -100 for a model that memorised the forget
documents, 0 for one as private as the retain model; the retain model's own row is 0 by
definition). The trade-off is read on VerbMem (forgetting) against KnowMem on retain (utility).

Default models (no ``--model``): a small Llama trained from scratch
(``unlearning.models.prepare_text_models``) -- the target on forget + retain1 + retain2, the
retain model on retain1 + retain2 -- plus, with ``--qa-texts`` (default), the KnowMem QA pairs
as in-context ``Question: … Answer: …`` texts (target: forget and retain questions; retain
model: retain questions), without which a model this small scores KnowMem ≈ 0. Measured on the
embedded corpus: see docs/analyses.md.

Sanity gate (:func:`analyses.gate.check_muse`): the target's VerbMem is at least
``--gate-min-verbmem`` and ``--gate-verbmem-gap`` above the retain model's.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from analyses.config import COMPUTE, DEFAULT_METHODS, BaseStudyConfig
from analyses.config import study_field as _f
from analyses.gate import Gate, check_muse
from analyses.studies.base import Axes, read_summary
from analyses.studies.text import TextBenchmark, grouped_texts
from unlearning.data import EmbeddedNewsConfig, load_muse, muse_texts
from unlearning.evaluate_muse import evaluate_muse

logger = logging.getLogger(__name__)

__all__ = ["MUSE_METHODS", "MuseBenchmark", "MuseStudyConfig"]

MUSE_METHODS = DEFAULT_METHODS
QUICK: dict[str, Any] = dict(quick=True, max_steps=3, trajectory_points=3, num_train_epochs=1.0,
                             per_device_train_batch_size=4, geffect_every=1, geffect_probe_size=4, eval_subset=4,
                             wagle_calibration=8, attribution_examples=2, attribution_steps=4,
                             verbmem_max_new_tokens=32, knowmem_max_new_tokens=8)
#: the ``--quick`` corpus: 6 documents per raw split
QUICK_CORPUS = EmbeddedNewsConfig(num_forget=6, num_retain=6, num_holdout=6, num_icl=2)


@dataclass
class MuseStudyConfig(BaseStudyConfig):
    """The MUSE study (``python -m analyses muse``; defaults: the embedded corpus on a 2-core CPU)."""

    QUICK: ClassVar[dict[str, Any]] = QUICK

    data: str = _f("embedded", "'embedded' (offline: the generated news corpus), a local folder in muse_bench's layout "
                   "(<folder>/raw/forget.json, verbmem/forget.json, knowmem/forget_qa.json, ...), or a hub name "
                   "(muse-bench/MUSE-News, muse-bench/MUSE-Books).", ["models"])
    model: str | None = _f(None, "Name or path of a target model already trained on the corpus (forget + retain); "
                           "skips preparing the default models.", ["models"])
    retain_model: str | None = _f(None, "Model trained without the forget documents (the PrivLeak reference); "
                                  "default: the prepared one.", ["models"])
    methods: list[str] = _f(MUSE_METHODS, "Methods to run: registered objectives, wagle_gd (GD restricted to the WAGLE "
                            "mask) or random_gd (GD on a random mask of the same density); space- or comma-separated.",
                            [])
    num_train_epochs: float = _f(2.0, "Unlearning epochs over the forget chunks.", ["methods"], renamed_from="epochs")
    learning_rate: float | None = _f(None, "Unlearning learning rate; default 3e-3 on the small default model, the "
                                     "unlearning default for pre-trained models with --model.", ["methods"],
                                     renamed_from="lr")
    geffect_every: int = _f(3, "Track G-effects (and PG-effects, probe weights) every k optimizer steps.", ["methods"])
    utility_budget: float = _f(0.9, "Matched-utility comparison: VerbMem where KnowMem on retain falls to this "
                               "fraction of the target's (interpolated along the trajectory).", [])
    eval_subset: int | None = _f(None, "Evaluate the first N items of every MUSE set (0 = all).",
                                 ["references", "methods"])
    eval_batch_size: int = _f(64, "Evaluation batch size.", ["references", "methods"])
    max_length: int = _f(128, "Tokens per unlearning chunk, BOS included (MUSE's baselines: 2048).", COMPUTE)
    geffect_probe_size: int = _f(12, "Forget and retain chunks the G-effects are measured on.", ["methods"],
                                 renamed_from="probe_size")
    wagle_calibration: int = _f(24, "Forget and retain chunks the WAGLE scores are computed on.", ["masks"])
    attribution_examples: int = _f(3, "Forget chunks whose token attributions are shown.", ["references", "methods"])
    output_dir: str = _f("outputs/geffect_muse", "Study folder (cached stages, data, figures, report).", [])
    retain_split: str = _f("retain1", "raw split the retain term trains on (MUSE's baselines: retain1; the KnowMem "
                           "retain questions are about retain2).", ["masks", "methods"])
    packing: str = _f("document", "'document': a chunk never crosses a document (a probe instance is one "
                      "document); 'concat': documents joined and cut every --max-length tokens (MUSE).", COMPUTE)
    qa_texts: bool = _f(True, "Also train the default models on the KnowMem QA pairs as in-context 'Question: … "
                        "Answer: …' texts (a small model trained from scratch scores KnowMem ≈ 0 without them).",
                        ["models"])
    verbmem_max_new_tokens: int = _f(128, "VerbMem continuation length (MUSE: 128; a shorter reference sets its own).",
                                     ["references", "methods"])
    knowmem_max_new_tokens: int = _f(32, "KnowMem answer length (MUSE: 32).", ["references", "methods"])
    knowmem_trailing_space: bool | None = _f(None, "End KnowMem prompts with 'Answer: ' (MUSE) rather than 'Answer:'; "
                                             "default: MUSE's with --model, none for the default models (their "
                                             "tokenizer never saw the space alone before an answer).",
                                             ["references", "methods"])
    gate_min_verbmem: float = _f(0.5, "Sanity gate: minimum VerbMem of the target on the forget documents.", [])
    gate_verbmem_gap: float = _f(0.3, "Sanity gate: the target's VerbMem must exceed the retain model's by at least "
                                 "this much (it reproduces documents the retain model never read).", [])

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.packing not in ("document", "concat"):
            raise ValueError(f"--packing must be 'document' or 'concat', got {self.packing!r}")
        for name in ("verbmem_max_new_tokens", "knowmem_max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_length < 8:
            raise ValueError(f"--max-length must be at least 8 tokens per chunk, got {self.max_length}")


class MuseBenchmark(TextBenchmark):
    """MUSE news (or books) documents; see the module docstring."""

    name = "muse"
    config_class = MuseStudyConfig
    title = "G-effect study of LLM unlearning objectives on MUSE"
    summary_keys = {"verbmem_f": "verbmem_f", "knowmem_f": "knowmem_f", "knowmem_r": "knowmem_r",
                    "privleak": "privleak", "privleak_auc": "privleak/auc", "mia_loss_auc": "mia/loss_auc"}
    metric_columns = ["method", "reference", "verbmem_f", "knowmem_f", "knowmem_r", "privleak", "privleak_auc",
                      "mia_loss_auc", "steps", "train_s", "eval_s"]
    trajectory_keys = {"verbmem_f": "verbmem_f", "knowmem_f": "knowmem_f", "knowmem_r": "knowmem_r",
                       "privleak": "privleak"}
    axes = Axes(forget="verbmem_f", retain="knowmem_r", forget_name="VerbMem", retain_name="KnowMem on retain",
                side="privleak", side_name="PrivLeak (%)")
    tradeoff = {"panels": [("verbmem_f", "knowmem_r", "VerbMem on forget (↓ better)", "KnowMem on retain (↑ better)"),
                           ("knowmem_f", "knowmem_r", "KnowMem on forget (↓ better)", "KnowMem on retain (↑ better)"),
                           ("privleak", "knowmem_r", "PrivLeak, % (0 = as the retain model)",
                            "KnowMem on retain (↑ better)")],
                "titles": ["verbatim memorisation", "knowledge memorisation", "privacy leakage"], "log_x": ()}
    captions = {**TextBenchmark.shared_captions,
        "tradeoff": "VerbMem and KnowMem on the forget set against KnowMem on the retain set (MUSE's utility), and "
                    "PrivLeak (−100: the forget documents are told apart from held-out ones as by the target; 0: as by "
                    "the retain model); the target and retain models are references.",
        "trajectory": "VerbMem against KnowMem on retain at evenly spaced checkpoints of every run (step 0 = the "
                      "target); right: PrivLeak over steps. Methods are compared where their curve crosses the dashed "
                      "utility budget (see the findings).",
        "pg_scatter": "Each point is a forget-probe chunk (one document with --packing document): its PG-effect on the "
                      "forget probe (x) and on the retain probe (y), coloured by the weight the method gave it.",
    }
    recipe, quick_recipe = TextBenchmark.text_recipes(max_epochs=60)

    def __init__(self, config: MuseStudyConfig):
        super().__init__(config)
        self.embedded = QUICK_CORPUS if config.quick and config.data == "embedded" else None

    # ---- data ---------------------------------------------------------------------------------
    def _texts(self, split: str, subset: str = "raw") -> list[str]:
        return muse_texts(self.config.data, split, subset=subset, embedded=self.embedded)

    def forget_texts(self) -> list[str]:
        return self._texts("forget")

    def retain_texts(self) -> list[str]:
        return self._texts(self.config.retain_split)

    def qa_texts(self, splits: tuple[str, ...]) -> list[str]:
        """The KnowMem pairs of ``splits`` as in-context texts (4 pairs a text, two shuffles)."""
        pairs = [f"Question: {r['question']}\nAnswer: {r['answer']}" for split in splits
                 for r in load_muse(self.config.data, "knowmem", split, embedded=self.embedded)]
        return grouped_texts(pairs, 4, seed=self.config.seed, repeats=2)

    def model_texts(self) -> tuple[list[str], list[str]]:
        retain = self._texts("retain1") + self._texts("retain2")
        target = self.forget_texts() + retain
        if self.config.qa_texts:
            retain_qa = self.qa_texts(("retain_qa", "retain_qa_icl"))
            target += self.qa_texts(("forget_qa", "forget_qa_icl", "retain_qa", "retain_qa_icl"))
            retain = retain + retain_qa
        return target, retain

    def describe(self) -> str:
        c = self.config
        what = ("the embedded MUSE-style news corpus" if c.data == "embedded" else f"MUSE data from {c.data}")
        return (f"raw/forget of {what} ({len(self.forget_texts())} documents; retain term on raw/{c.retain_split}, "
                f"chunks of at most {c.max_length} tokens)")

    def source_dict(self) -> dict[str, Any]:
        c = self.config
        return {"benchmark": self.name, "data": str(c.data),
                "embedded": dataclasses.asdict(self.embedded) if self.embedded else None,
                "retain_split": c.retain_split, "qa_texts": c.qa_texts}

    @property
    def trailing_space(self) -> bool:
        c = self.config
        return c.knowmem_trailing_space if c.knowmem_trailing_space is not None else c.model is not None

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self, model, tokenizer, out_dir: Path, retain_reference: Path | None = None, *,
                 role: str = "model") -> dict[str, Any]:
        c = self.config
        res = evaluate_muse(model, tokenizer, c.data, embedded=self.embedded, retain_reference=read_summary(retain_reference),
                            verbmem_max_new_tokens=c.verbmem_max_new_tokens,
                            knowmem_max_new_tokens=c.knowmem_max_new_tokens, knowmem_trailing_space=self.trailing_space,
                            batch_size=c.eval_batch_size, max_samples=c.eval_subset)
        if role == "retain":  # PrivLeak is relative to the retain model: 0 for itself by definition
            auc = res.summary["privleak/auc"]
            res.summary.update({"privleak": 0.0, "privleak/auc_retain": auc, "privleak/reference": "itself"})
        res.save(out_dir)
        return res.summary

    def gate(self, target: Mapping[str, Any], retain: Mapping[str, Any] | None) -> Gate:
        c = self.config
        return check_muse(target or {}, retain, min_verbmem=c.gate_min_verbmem, verbmem_gap=c.gate_verbmem_gap)

    def notes(self, paths) -> list[str]:
        notes = super().notes(paths)
        if self.config.model is None and self.config.qa_texts:
            notes.append("The default models were also trained on the KnowMem question-answer pairs as in-context "
                         "texts (not part of MUSE's protocol; a model this small does not answer questions about "
                         "documents otherwise), so KnowMem here measures those memorised answers.")
        if not self.trailing_space:
            notes.append("KnowMem prompts end with 'Answer:' (MUSE: 'Answer: '), see --knowmem-trailing-space.")
        return notes
