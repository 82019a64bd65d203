"""What the raw-text benchmarks (MUSE, WMDP) share: chunked corpora, probes, default models from text.

Unlearning items are chunks of the forget corpus with ``labels == input_ids``
(``unlearning.data.build_text_unlearning_data``), each paired with a random retain chunk, and
``unlearning.train.run_unlearning`` takes them ready (``datasets=``). The G-effect probes are
the first ``--geffect-probe-size`` forget and retain chunks, so the probe risk is the mean token
NLL of a chunk (column 0, the BOS, is never scored), and the objectives' token weights are
logged on document tokens. With ``--packing document`` (the default) a chunk never crosses a document,
so a forget probe instance -- and its PG-effect -- is one document (or one piece of it).

The default target and retain models are trained from scratch on the benchmark's corpora
(``unlearning.models.prepare_text_models``), together with "answer-format" texts -- the
benchmark's questions rendered the way its evaluation asks them (MUSE: in-context
``Question: … Answer: …`` pairs; WMDP: answered multiple-choice prompts) -- because a model
of a few hundred thousand parameters trained on a few dozen documents does not carry facts over
from prose to a question format it never saw.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Sequence

from analyses.config import BaseStudyConfig
from analyses.studies.base import Benchmark
from unlearning.data import TextUnlearningData, build_text_unlearning_data, load_idk_answers
from unlearning.models import DefaultRecipe, prepare_text_models

logger = logging.getLogger(__name__)

__all__ = ["TextBenchmark", "grouped_texts"]

#: objectives that train on refusal answers (TextChunkDataset.encode makes their items)
IDK_OBJECTIVES = ("idk", "dpo")


def grouped_texts(texts: Sequence[str], group: int, *, separator: str = "\n\n", seed: int = 0,
                  repeats: int = 1) -> list[str]:
    """``texts`` shuffled (seeded) and joined ``group`` at a time with ``separator``, ``repeats`` times.

    Renders QA pairs as the in-context prompts they are asked in (several pairs, then the
    question): a model trained on single pairs never sees a question after other pairs.
    """
    if group < 1 or repeats < 1:
        raise ValueError(f"group and repeats must be >= 1, got {group} and {repeats}")
    out = []
    for k in range(repeats):
        items = list(texts)
        random.Random(f"{seed}-{k}").shuffle(items)
        out += [separator.join(items[i:i + group]) for i in range(0, len(items), group)]
    return out


class TextBenchmark(Benchmark):
    """A benchmark whose forget and retain sets are documents (see the module docstring).

    Subclasses provide :meth:`forget_texts`, :meth:`retain_texts` and :meth:`model_texts`
    (what the default target and retain models are trained on), and set ``recipe`` /
    ``quick_recipe``.
    """

    recipe: DefaultRecipe = DefaultRecipe()
    quick_recipe: DefaultRecipe = DefaultRecipe()
    #: tokens per training chunk of the default models
    model_chunk_length: int = 128
    findings = ("ga_mirror", "layers_unlearning", "attn_vs_mlp", "weighting_shrinks", "retain_relative",
                "per_unit_update", "matched_utility", "satimp_ordering", "wagle_tradeoff", "granularity",
                "weights_vs_likelihood", "wagle_mask", "attribution_shift")
    #: measured on the embedded corpora: within 2 epochs GA / NPO lose utility with the forget
    #: knowledge, while SatImp keeps most of it (docs/analyses.md)
    default_model_lr = 3e-3
    #: captions every text benchmark shares (subclasses add their own)
    shared_captions = {
        "token_attribution": "Integrated-gradients attribution of each forget chunk's log-likelihood to its tokens' "
                             "embeddings, before and after unlearning.",
    }

    @staticmethod
    def text_recipes(max_epochs: int) -> tuple[DefaultRecipe, DefaultRecipe]:
        """(recipe, quick recipe) of the measured text models: 2 tied layers (docs/analyses.md; the
        6-layer TOFU default is not tuned on text yet), ``max_epochs`` per benchmark."""
        return (DefaultRecipe(max_length=256, max_epochs=max_epochs, lr=4e-3, batch_size=8, num_layers=2,
                              tie_word_embeddings=True),
                DefaultRecipe(vocab_size=512, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                              max_length=128, max_epochs=max_epochs, lr=4e-3, batch_size=8))

    def __init__(self, config: BaseStudyConfig):
        super().__init__(config)
        self.out = Path(config.output_dir)
        self._data: dict[tuple[int, bool], TextUnlearningData] = {}

    # ---- what subclasses provide -------------------------------------------------------------
    def forget_texts(self) -> list[str]:
        raise NotImplementedError

    def retain_texts(self) -> list[str]:
        raise NotImplementedError

    def model_texts(self) -> tuple[list[str], list[str]]:
        """(target texts, retain texts) the default models are trained on."""
        raise NotImplementedError

    @property
    def cache_name(self) -> str:
        """Prefix of the default models' cache folder."""
        return f"{self.name}-{'embedded' if self.config.data == 'embedded' else 'data'}"

    # ---- data and models ----------------------------------------------------------------------
    def prepare_default_models(self) -> tuple[dict[str, str | None], dict[str, Any]]:
        c = self.config
        target, retain = self.model_texts()
        recipe = self.quick_recipe if c.quick else self.recipe
        prepared = prepare_text_models(self.cache_name, target, retain, recipe=recipe,
                                       chunk_length=self.model_chunk_length, packing="document",
                                       cache_dir=c.cache_dir, progress=c.progress)
        return {"target": str(prepared.target), "retain": c.retain_model or str(prepared.retain)}, prepared.report()

    def unlearning_data(self, tokenizer, idk: bool = False) -> TextUnlearningData:
        """The chunked forget / retain corpora for ``tokenizer`` (built once per tokenizer)."""
        key = (id(tokenizer), idk)
        if key not in self._data:
            c = self.config
            self._data[key] = build_text_unlearning_data(
                self.forget_texts(), self.retain_texts(), tokenizer, max_length=c.max_length, packing=c.packing,
                seed=c.seed, idk_answers=load_idk_answers("embedded") if idk else None)
        return self._data[key]

    def unlearning_kwargs(self) -> dict[str, Any]:
        return dict(data=str(self.config.data), split="forget", retain_holdout="none")

    def run_kwargs(self, tokenizer, model, objective) -> dict[str, Any]:
        needs_idk = getattr(objective, "needs_idk", getattr(objective, "name", "") in IDK_OBJECTIVES)
        return {"datasets": self.unlearning_data(tokenizer, idk=bool(needs_idk))}

    def examples(self, tokenizer, model, which: str, n: int | None):
        data = self.unlearning_data(tokenizer)
        ds = data.forget if which == "forget" else data.retain
        return [ds[i] for i in range(len(ds) if n is None else min(n, len(ds)))]

    def n_forget_items(self, tokenizer, model=None) -> int:
        if tokenizer is None:
            raise ValueError(f"the {self.name} benchmark counts forget chunks with the model's tokenizer; pass it")
        return len(self.unlearning_data(tokenizer).forget)

    def notes(self, paths) -> list[str]:
        notes = []
        if not paths.get("retain"):
            notes.append("No retain model was given: the metrics relative to it are not reported and the gate "
                         "checks the target alone.")
        c = self.config
        notes.append(f"Unlearning items are chunks of at most --max-length {c.max_length} tokens of the forget corpus "
                     f"(--packing {c.packing}); the G-effect probe risk of a chunk is its mean token NLL.")
        return notes
