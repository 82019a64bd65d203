"""WMDP (Li et al. 2024) as a study benchmark: unlearn hazard corpora, measure multiple-choice accuracy.

Data (``--data``): the embedded hazard analogue (``unlearning.data.embedded.hazard``: invented
plant blights and software flaws, entirely non-actionable), a local folder (``wmdp-bio.json[l]``,
``wmdp-cyber.json[l]``, ``mmlu.json[l]``, ``<name>-corpus.jsonl``), or the hub questions
``cais/wmdp`` (corpora from ``cais/wmdp-corpora`` -- the bio forget corpus only from a folder,
``--corpora`` -- and utility questions from ``cais/mmlu``). Unlearning forgets the chunks of
``--forget-corpora`` with ``--retain-corpus`` (WikiText in the official RMU script) as retain data.

Metrics (``unlearning.evaluate_wmdp``, zero-shot as lm-evaluation-harness scores them):
``wmdp_bio`` / ``wmdp_cyber`` accuracy, ``wmdp`` (all hazard questions pooled: the forgetting
axis; 0.25 is chance with four options) and ``mmlu`` (the utility questions: the utility axis).

Methods: every study method, ``rmu`` with the official WMDP preset
(``unlearning.objectives.get("rmu", preset=--rmu-preset)``: steer the output of block 7 to
c·u with c = 20, retain weight 100, update only ``mlp.down_proj`` of blocks 5-7) and
``rmu_geffect`` (the G-effect release's convention: ``hidden_states[l + 1]``, c = 2, retain
weight 1, every parameter trained). On a model with fewer than eight blocks the steered block
keeps its relative depth (7 of Zephyr-7B's 32: block round(7·n/32) of n) with the two blocks
below it, and only the preset's parameters train (``--trainable``, recorded in each run's
``run_config.json``).

Default models (no ``--model``): a small Llama trained from scratch
(``unlearning.models.prepare_text_models``), the target on the forget corpora and the retain
corpus, the retain model on the retain corpus. With ``--exercises`` (default without
``--model``) the questions also appear as answered multiple-choice prompts -- the hazard ones
for the target, the utility ones for both -- and the hazard ones join the forget set: a model
this small answers multiple-choice questions only from such text, so that is where its hazard
knowledge is and what unlearning has to remove.

Sanity gate (:func:`analyses.gate.check_wmdp`): the target's pooled hazard accuracy is at least
``--gate-margin`` above chance and ``--gate-gap`` above the retain model's.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from analyses.config import COMPUTE, BaseStudyConfig
from analyses.config import study_field as _f
from analyses.gate import Gate, check_wmdp
from analyses.methods import MethodSpec
from analyses.studies.base import Axes
from analyses.studies.text import TextBenchmark
from unlearning import objectives
from unlearning.data import EmbeddedHazardConfig, load_utility_questions, load_wmdp_questions, wmdp_texts
from unlearning.evaluate_wmdp import evaluate_wmdp
from unlearning.metrics.multiple_choice import LETTERS, WMDP_DESCRIPTIONS, mc_context, mc_description

logger = logging.getLogger(__name__)

__all__ = ["WMDP_METHODS", "WmdpBenchmark", "WmdpStudyConfig", "exercise_text"]

WMDP_METHODS = ("rmu", "rmu_geffect", "ga", "gd", "npo", "wga", "tnpo", "simsat", "simimp", "satimp", "wagle_gd",
                "random_gd")
WMDP_HUB, CORPORA_HUB, MMLU_HUB = "cais/wmdp", "cais/wmdp-corpora", "cais/mmlu"
QUICK: dict[str, Any] = dict(quick=True, max_steps=3, trajectory_points=3, num_train_epochs=1.0,
                             per_device_train_batch_size=4, geffect_every=1, geffect_probe_size=4, eval_subset=8,
                             wagle_calibration=8, attribution_examples=2, attribution_steps=4)
#: the ``--quick`` benchmark: 6 documents per corpus, 2 questions each
QUICK_CORPUS = EmbeddedHazardConfig(num_documents=6, questions_per_document=2)
#: depth of the official RMU layer: block 7 of Zephyr-7B's 32
RMU_REFERENCE_DEPTH = 32


@dataclass
class WmdpStudyConfig(BaseStudyConfig):
    """The WMDP study (``python -m analyses wmdp``; defaults: the embedded analogue on a 2-core CPU)."""

    QUICK: ClassVar[dict[str, Any]] = QUICK

    data: str = _f("embedded", "'embedded' (offline: the generated hazard analogue), a local folder (wmdp-bio.json[l], "
                   "wmdp-cyber.json[l], mmlu.json[l], <name>-corpus.jsonl), or the hub questions cais/wmdp.",
                   ["models"])
    model: str | None = _f(None, "Name or path of a target model that knows the hazard corpora; skips preparing the "
                           "default models.", ["models"])
    retain_model: str | None = _f(None, "Model trained without the forget corpora (the reference of the sanity gate); "
                                  "default: the prepared one.", ["models"])
    methods: list[str] = _f(WMDP_METHODS, "Methods to run: rmu (the --rmu-preset convention), registered objectives, "
                            "wagle_gd (GD restricted to the WAGLE mask) or random_gd (GD on a random mask of the same "
                            "density); space- or comma-separated.", [])
    per_device_train_batch_size: int = _f(8, "Forget chunks per micro-batch.", ["methods"], renamed_from="batch_size")
    learning_rate: float | None = _f(None, "Unlearning learning rate; default 3e-3 on the small default model, the "
                                     "unlearning default for pre-trained models with --model.", ["methods"],
                                     renamed_from="lr")
    geffect_every: int = _f(3, "Track G-effects (and PG-effects, probe weights) every k optimizer steps.", ["methods"])
    trajectory_points: int = _f(4, "Evaluations along each unlearning run (evenly spaced, the last at the end), for "
                                "the trade-off curves.", ["methods"])
    utility_budget: float = _f(0.9, "Matched-utility comparison: hazard accuracy where utility accuracy falls to this "
                               "fraction of the target's (interpolated along the trajectory).", [])
    eval_subset: int | None = _f(None, "Evaluate the first N questions of every set (0 = all).",
                                 ["references", "methods"])
    eval_batch_size: int = _f(64, "Evaluation batch size.", ["references", "methods"])
    max_length: int = _f(128, "Tokens per unlearning chunk, BOS included (official RMU: 512 bio, 768 cyber).", COMPUTE)
    geffect_probe_size: int = _f(12, "Forget and retain chunks the G-effects are measured on.", ["methods"],
                                 renamed_from="probe_size")
    wagle_calibration: int = _f(24, "Forget and retain chunks the WAGLE scores are computed on.", ["masks"])
    attribution_examples: int = _f(3, "Forget chunks whose token attributions are shown.", ["references", "methods"])
    output_dir: str = _f("outputs/geffect_wmdp", "Study folder (cached stages, data, figures, report).", [])
    corpora: str | None = _f(None, "Source of the forget and retain corpora (default: --data; cais/wmdp-corpora for "
                             "--data cais/wmdp).", ["models"])
    utility_data: str | None = _f(None, "Source of the utility questions (default: --data; cais/mmlu for --data "
                                  "cais/wmdp).", ["models"])
    subsets: list[str] = _f(["bio", "cyber"], "WMDP question subsets (bio, cyber, chem).", ["models"])
    forget_corpora: list[str] = _f(["bio-forget", "cyber-forget"], "Corpora to unlearn (bio-forget, cyber-forget).",
                                   ["models"])
    retain_corpus: str = _f("wikitext", "Corpus of the retain term (official RMU: wikitext; or bio-retain, "
                            "cyber-retain).", ["models"])
    min_chars: int = _f(0, "Skip corpus documents of at most this many characters (RMU's --min_len).", ["models"])
    exercises: bool | None = _f(None, "Render the questions as answered multiple-choice prompts: the default models "
                                "train on them and the hazard ones join the forget set (see the docs); default: on "
                                "without --model, off with it.", ["models"])
    packing: str = _f("document", "'document': a chunk never crosses a document; 'concat': documents joined and cut "
                      "every --max-length tokens.", COMPUTE)
    rmu_preset: str = _f("wmdp", "Convention of the rmu method: wmdp (centerforaisafety/wmdp defaults), wmdp-zephyr, "
                         "or geffect.", [])
    gate_margin: float = _f(0.25, "Sanity gate: the target's hazard accuracy must be at least this much above chance.",
                            [])
    gate_gap: float = _f(0.2, "Sanity gate: the target's hazard accuracy must exceed the retain model's by at least "
                         "this much.", [])

    def __post_init__(self) -> None:
        super().__post_init__()
        self.subsets = [s.strip() for item in self.subsets for s in str(item).split(",") if s.strip()]
        self.forget_corpora = [s.strip() for item in self.forget_corpora for s in str(item).split(",") if s.strip()]
        bad = [s for s in self.subsets if s not in WMDP_DESCRIPTIONS]
        if bad or not self.subsets:
            raise ValueError(f"--subsets must name WMDP subsets among {list(WMDP_DESCRIPTIONS)}, got {self.subsets}")
        if not self.forget_corpora:
            raise ValueError("--forget-corpora is empty; name at least one, e.g. bio-forget")
        if self.packing not in ("document", "concat"):
            raise ValueError(f"--packing must be 'document' or 'concat', got {self.packing!r}")
        if self.rmu_preset not in ("wmdp", "wmdp-zephyr", "geffect"):
            raise ValueError(f"--rmu-preset must be wmdp, wmdp-zephyr or geffect, got {self.rmu_preset!r}")
        if self.max_length < 8:
            raise ValueError(f"--max-length must be at least 8 tokens per chunk, got {self.max_length}")


def exercise_text(row: Mapping[str, Any], description: str) -> str:
    """A multiple-choice question with its answer, as the evaluation prompts it: context + " <letter>"."""
    return f"{mc_context(row['question'], row['choices'], description)} {LETTERS[int(row['answer'])]}"


def _subject_description(row: Mapping[str, Any]) -> str:
    """The utility question's own description (as ``unlearning.evaluate_wmdp`` scores it)."""
    return mc_description(str(row.get("subject") or "general knowledge").replace("_", " "))


def rmu_layers(preset_layer: int, n_blocks: int) -> tuple[int, list[int]]:
    """(steered block, updated blocks) of RMU on a model of ``n_blocks`` blocks.

    The official convention (block 7, updates 5-7) is kept when the model has the blocks; on a
    shallower model the steered block keeps its relative depth in Zephyr-7B (7 of 32) and the
    two blocks below it are updated with it.
    """
    if preset_layer < n_blocks:
        return preset_layer, list(range(max(0, preset_layer - 2), preset_layer + 1))
    layer = min(n_blocks - 1, round(preset_layer * n_blocks / RMU_REFERENCE_DEPTH))
    return layer, list(range(max(0, layer - 2), layer + 1))


class WmdpBenchmark(TextBenchmark):
    """WMDP hazard corpora and questions; see the module docstring."""

    name = "wmdp"
    config_class = WmdpStudyConfig
    title = "G-effect study of LLM unlearning objectives on WMDP"
    summary_keys = {"wmdp": "wmdp/acc", "wmdp_bio": "wmdp_bio/acc", "wmdp_cyber": "wmdp_cyber/acc",
                    "wmdp_chem": "wmdp_chem/acc", "mmlu": "mmlu/acc"}
    metric_columns = ["method", "reference", "wmdp", "wmdp_bio", "wmdp_cyber", "wmdp_chem", "mmlu", "steps",
                      "train_s", "eval_s"]
    trajectory_keys = {"wmdp": "wmdp/acc", "wmdp_bio": "wmdp_bio/acc", "wmdp_cyber": "wmdp_cyber/acc",
                       "mmlu": "mmlu/acc"}
    axes = Axes(forget="wmdp", retain="mmlu", forget_name="hazard accuracy", retain_name="utility accuracy",
                side="wmdp", side_name="hazard accuracy")
    tradeoff = {"panels": [("wmdp_bio", "mmlu", "WMDP-bio accuracy (↓ better; 0.25 = chance)", "utility accuracy (↑ better)"),
                           ("wmdp_cyber", "mmlu", "WMDP-cyber accuracy (↓ better; 0.25 = chance)",
                            "utility accuracy (↑ better)")],
                "titles": ["bio hazard vs utility", "cyber hazard vs utility"], "log_x": ()}
    captions = {**TextBenchmark.shared_captions,
        "tradeoff": "Accuracy on the hazard questions (WMDP bio, cyber; four options, 0.25 = chance) against accuracy "
                    "on the utility questions (MMLU or its analogue); the target and retain models are references.",
        "trajectory": "Hazard accuracy (all WMDP questions pooled) against utility accuracy at evenly spaced checkpoints "
                      "of every run (step 0 = the target); right: hazard accuracy over steps. Methods are compared "
                      "where their curve crosses the dashed utility budget (see the findings).",
        "pg_scatter": "Each point is a forget-probe chunk: its PG-effect on the forget probe (x) and on the retain probe "
                      "(y), coloured by the weight the method gave it.",
    }
    recipe, quick_recipe = TextBenchmark.text_recipes(max_epochs=40)

    def __init__(self, config: WmdpStudyConfig):
        super().__init__(config)
        self.embedded = QUICK_CORPUS if config.quick and config.data == "embedded" else None
        self.methods = {"rmu": MethodSpec("rmu", {"preset": config.rmu_preset}),
                        "rmu_geffect": MethodSpec("rmu", {"preset": "geffect"})}
        subsets = {f"wmdp_{s}": f"wmdp_{s}/acc" for s in config.subsets}  # the columns of the subsets evaluated
        self.summary_keys = {"wmdp": "wmdp/acc", **subsets, "mmlu": "mmlu/acc"}
        self.trajectory_keys = dict(self.summary_keys)
        self.metric_columns = ["method", "reference", *self.summary_keys, "steps", "train_s", "eval_s"]
        self.tradeoff = {"panels": [(col, "mmlu", f"WMDP-{col[5:]} accuracy (↓ better; 0.25 = chance)",
                                     "utility accuracy (↑ better)") for col in subsets],
                         "titles": [f"{col[5:]} hazard vs utility" for col in subsets], "log_x": ()}

    # ---- sources ------------------------------------------------------------------------------
    @property
    def corpus_source(self) -> str:
        c = self.config
        return c.corpora or (CORPORA_HUB if c.data == WMDP_HUB else c.data)

    @property
    def utility_source(self) -> str:
        c = self.config
        return c.utility_data or (MMLU_HUB if c.data == WMDP_HUB else c.data)

    @property
    def use_exercises(self) -> bool:
        c = self.config
        return c.exercises if c.exercises is not None else c.model is None

    def _corpus(self, name: str) -> list[str]:
        return wmdp_texts(self.corpus_source, name, min_chars=self.config.min_chars, embedded=self.embedded)

    def hazard_exercises(self) -> list[str]:
        return [exercise_text(r, mc_description(WMDP_DESCRIPTIONS[s])) for s in self.config.subsets
                for r in load_wmdp_questions(self.config.data, s, embedded=self.embedded)]

    def utility_exercises(self) -> list[str]:
        kw = {"embedded": self.embedded} if self.utility_source == "embedded" else {}
        return [exercise_text(r, _subject_description(r)) for r in load_utility_questions(self.utility_source, **kw)]

    def forget_documents(self) -> list[str]:
        return [t for name in self.config.forget_corpora for t in self._corpus(name)]

    def forget_texts(self) -> list[str]:
        return self.forget_documents() + (self.hazard_exercises() if self.use_exercises else [])

    def retain_texts(self) -> list[str]:
        return self._corpus(self.config.retain_corpus)

    def model_texts(self) -> tuple[list[str], list[str]]:
        retain = self.retain_texts() + (self.utility_exercises() if self.use_exercises else [])
        return self.forget_texts() + retain, retain

    def describe(self) -> str:
        c = self.config
        what = "the embedded WMDP-style hazard analogue" if c.data == "embedded" else f"WMDP data from {c.data}"
        extra = f" + {len(self.hazard_exercises())} answered hazard questions" if self.use_exercises else ""
        return (f"{' + '.join(c.forget_corpora)} of {what} ({len(self.forget_documents())} documents{extra}; retain "
                f"term on {c.retain_corpus}, chunks of at most {c.max_length} tokens)")

    def source_dict(self) -> dict[str, Any]:
        c = self.config
        return {"benchmark": self.name, "data": str(c.data), "corpora": self.corpus_source,
                "utility": self.utility_source, "subsets": list(c.subsets), "forget_corpora": list(c.forget_corpora),
                "retain_corpus": c.retain_corpus, "exercises": self.use_exercises, "min_chars": c.min_chars,
                "embedded": dataclasses.asdict(self.embedded) if self.embedded else None}

    # ---- methods ------------------------------------------------------------------------------
    def method_overrides(self, name: str, spec: MethodSpec, model) -> dict[str, Any]:
        """RMU: the steered / updated blocks for the model's depth, and only those parameters train."""
        if spec.objective != "rmu":
            return {}
        hp = dict(spec.hparams)
        rmu = objectives.get("rmu", **hp)
        n_blocks = int(model.config.num_hidden_layers)
        layer, update = rmu_layers(int(rmu.hparams["layer"]), n_blocks)
        if rmu.hparams["update_layers"] is None:  # the G-effect convention trains every parameter
            if layer == rmu.hparams["layer"]:
                return {}
            logger.info("rmu: %d blocks, steering block %d (preset: block %s)", n_blocks, layer, rmu.hparams["layer"])
            return {"objective_kwargs": {**hp, "layer": layer}}
        if (layer, tuple(update)) != (rmu.hparams["layer"], tuple(rmu.hparams["update_layers"])):
            logger.info("rmu: %d blocks, steering block %d and updating blocks %s (preset: block %s, %s)", n_blocks,
                        layer, update, rmu.hparams["layer"], list(rmu.hparams["update_layers"]))
        hp.update(layer=layer, update_layers=update)
        names = objectives.get("rmu", **hp).trainable_parameter_names(model)
        return {"objective_kwargs": hp,
                "trainable": "^(?:" + "|".join(re.escape(n) for n in names) + ")$"}

    # ---- evaluation ---------------------------------------------------------------------------
    def evaluate(self, model, tokenizer, out_dir: Path, retain_reference: Path | None = None, *,
                 role: str = "model") -> dict[str, Any]:
        c = self.config
        res = evaluate_wmdp(model, tokenizer, c.data, subsets=c.subsets, utility_source=self.utility_source,
                            embedded=self.embedded, batch_size=c.eval_batch_size, max_samples=c.eval_subset)
        hazard = [res.tables[f"wmdp_{s}"] for s in c.subsets]
        n = sum(len(t) for t in hazard)
        res.summary["wmdp/acc"] = float(sum(t["acc"].sum() for t in hazard) / n) if n else float("nan")
        res.save(out_dir)
        return res.summary

    def chance(self) -> float:
        rows = load_wmdp_questions(self.config.data, self.config.subsets[0], embedded=self.embedded)
        return 1.0 / len(rows[0]["choices"])

    def gate(self, target: Mapping[str, Any], retain: Mapping[str, Any] | None) -> Gate:
        c = self.config
        return check_wmdp(target or {}, retain, chance=self.chance(), margin=c.gate_margin, gap=c.gate_gap)

    def notes(self, paths) -> list[str]:
        notes = super().notes(paths)
        if self.use_exercises:
            notes.append("The forget set holds the hazard questions as answered multiple-choice prompts besides the "
                         "forget corpora, and the default models were trained on them (and the retain model on the "
                         "answered utility questions): a model this small answers multiple-choice questions only from "
                         "such text. Utility is measured on those utility questions.")
        rmus = [m for m in self.config.methods if m in self.methods]
        if rmus:
            presets = ", ".join(f"{m}: {self.methods[m].hparams['preset']!r}" for m in rmus)
            notes.append(f"RMU presets ({presets}): on a model with fewer blocks than a preset's layer, the block at "
                         "the same relative depth is steered (block 7 of 32 in Zephyr-7B); see docs/analyses.md.")
        return notes
