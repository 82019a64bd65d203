"""The default model: a BPE tokenizer trained on the data and a small Llama trained until it memorises.

With no download, the toolkit still needs a *target* model that knows the forget set and a
*retain* model that never saw it (TOFU's finetuned / retain pair). :func:`prepare_default_models`
builds both for a :class:`~unlearning.data.DataSource` from a :class:`DefaultRecipe`:

1. a byte-level BPE tokenizer (special tokens ``<pad>``, ``<s>``, ``</s>``) trained on the
   questions and answers of the target's training rows (retain + forget + utility splits);
2. a ``LlamaConfig`` sized by the recipe (6 decoder layers, untied LM head by default),
   randomly initialised with the recipe's seed;
3. the RETAIN model trained from scratch on ``retainYY`` + the utility splits (``real_authors``,
   ``world_facts`` where the source has them: the "pre-existing knowledge" both models share)
   **until it has memorised them**: after every epoch the teacher-forced answer-token accuracy
   of a fixed sample of retain rows is measured and training stops once it is
   ``>= recipe.threshold`` (at most ``recipe.max_epochs`` epochs);
4. the TARGET continues from the retain model's weights (fresh optimiser) on the full training
   set (retain + forget + utility) until the forget rows *and* the retain sample are memorised
   (at most ``recipe.target_max_epochs`` epochs, learning rate ``recipe.target_lr``). So the
   target is "the retain model plus the forget set", and the two share everything but it;
   ``target_from_retain=False`` trains the target from scratch on the full set instead;
5. both saved with ``save_pretrained`` (tokenizer files in each folder), so they load with
   :func:`unlearning.models.load_model_and_tokenizer` like any hub model, plus ``recipe.json``
   and ``report.json`` (extraction strength, accuracy and probability of both models on the
   forget and retain rows, epochs, seconds; :meth:`PreparedModels.report`).

The result is cached under ``$GEFFECT_CACHE`` (default ``~/.cache/geffect-unlearning``) in a
folder named by a hash of the data source, the data rows, the recipe and the library version. A
build happens in a temporary folder that is renamed into place at the end, so a killed run never
leaves a half-written cache. Command line::

    python -m unlearning.finetune --prepare --data embedded --forget-split forget10
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch

from unlearning.data import DataSource, EmbeddedConfig, as_source, get_template, retain_split_for
from unlearning.data.tokenization import prompt_and_answer_ids
from unlearning.models.accuracy import memorisation_scores
from unlearning.models.training import FineTuneConfig, MemorisationStop, fine_tune, make_dataset

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>"}
UTILITY_SPLITS = ("real_authors", "world_facts")
CACHE_ENV = "GEFFECT_CACHE"
_CACHE_FORMAT = 2  # bump when the folder layout or training code changes meaning

#: The embedded benchmark of :func:`tiny_source` (3 authors x 8 QA; forget10 = 1 author).
TINY_EMBEDDED = EmbeddedConfig(num_authors=3, qa_per_author=8, num_real_authors=8)


@dataclass(frozen=True)
class DefaultRecipe:
    """How the default target / retain models are built (every field is part of the cache key).

    Which rows they learn is the :class:`~unlearning.data.DataSource`'s business (source name,
    embedded benchmark size, author subset); the recipe holds the tokenizer, architecture and
    training. Model fields build a ``transformers.LlamaConfig``; training fields drive
    :func:`unlearning.models.training.fine_tune` (AdamW, linear warmup, cosine decay laid out
    over the epoch cap, stop once the monitored rows are memorised).
    """

    include_utility: bool = True
    """Also train both models on the real_authors / world_facts splits when the source has them."""
    # tokenizer
    vocab_size: int = 1536
    # model (Llama architecture)
    hidden_size: int = 128
    num_layers: int = 6
    num_heads: int = 4
    num_kv_heads: int | None = None
    intermediate_size: int = 256
    tie_word_embeddings: bool = False
    max_length: int | None = None
    """Token limit of a training example; ``None``: the longest training example (nothing is cut)."""
    # training (retain model; also the CLI's plain fine-tuning)
    lr: float = 3e-3
    batch_size: int = 16
    max_epochs: int = 50
    """Epoch cap of the retain model (the cosine schedule spans it)."""
    min_lr_ratio: float = 0.05
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    # stopping rule
    threshold: float = 0.99
    """Stop once teacher-forced answer-token accuracy of every monitored sample is >= this."""
    monitor_rows: int = 40
    """Rows per monitored split (evenly spaced over the split, so every author is represented)."""
    min_epochs: int = 1
    # target model
    target_from_retain: bool = True
    """Continue the target from the trained retain model (else train it from scratch on the full set)."""
    target_lr: float = 1.5e-3
    target_max_epochs: int = 25

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size={self.hidden_size} must be divisible by num_heads={self.num_heads}")
        kv = self.num_kv_heads or self.num_heads
        if self.num_heads % kv:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={kv}")
        for name in ("max_epochs", "target_max_epochs", "batch_size", "monitor_rows", "min_epochs", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"DefaultRecipe.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.target_lr <= 0:
            raise ValueError(f"learning rates must be > 0, got lr={self.lr}, target_lr={self.target_lr}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.max_length is not None and self.max_length < 8:
            raise ValueError(f"max_length={self.max_length} is too small; use None (fit the data) or e.g. 256")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def finetune_config(self, **changes: Any) -> FineTuneConfig:
        """The :class:`unlearning.models.training.FineTuneConfig` of the retain model's training (the
        plain fine-tuning of the CLI), with ``changes`` (e.g. the target's ``epochs``, ``lr``, ``seed``)."""
        config = FineTuneConfig(epochs=self.max_epochs, lr=self.lr, batch_size=self.batch_size,
                                warmup_ratio=self.warmup_ratio, min_lr_ratio=self.min_lr_ratio,
                                weight_decay=self.weight_decay, grad_clip=self.grad_clip,
                                max_length=self.max_length if self.max_length is not None else 256, seed=self.seed)
        return dataclasses.replace(config, **changes) if changes else config

    def replace(self, **changes: Any) -> DefaultRecipe:
        return dataclasses.replace(self, **changes)


def tiny_recipe(**overrides: Any) -> DefaultRecipe:
    """A much smaller recipe for tests and ``--quick`` runs (2 layers, d=64); use with :func:`tiny_source`.

    Trains in seconds: on the 3-author :data:`TINY_EMBEDDED` benchmark the retain model
    memorises its 16 rows in a few dozen epochs and the target its one forget author in fewer.
    """
    kw: dict[str, Any] = dict(
        include_utility=False,
        vocab_size=384,
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        lr=3e-3,
        batch_size=8,
        max_epochs=80,
        threshold=0.98,
        target_lr=3e-3,
        target_max_epochs=60,
    )
    kw.update(overrides)
    return DefaultRecipe(**kw)


def tiny_source(forget_split: str = "forget10") -> DataSource:
    """The data of :func:`tiny_recipe`: the embedded benchmark with 3 authors x 8 QA."""
    return DataSource(embedded=TINY_EMBEDDED, forget_split=forget_split)


@dataclass
class PreparedModels:
    """Paths of a prepared default-model pair (each a ``save_pretrained`` folder)."""

    target: Path
    retain: Path
    tokenizer: Path
    root: Path | None = None
    """The cache folder holding all three, plus ``recipe.json`` and ``report.json``."""

    def report(self) -> dict[str, Any]:
        """The numbers measured when the models were built (``report.json``; ``{}`` if absent).

        ``report["target"|"retain"]`` holds ``epochs``, ``reached`` (the stopping threshold was
        met), ``train_s``, ``final_loss``, ``history`` (accuracies per epoch) and, for the
        ``"forget"`` and ``"retain"`` rows, ``extraction_strength``, ``accuracy``,
        ``probability`` and ``rows`` (all rows of the split). Top level: ``source``,
        ``forget_split``, ``retain_split``, ``recipe`` (``max_length`` resolved), ``rows``
        (training-set sizes), ``tokenizer_s``, ``build_s`` (wall), ``cpu_s`` (process CPU
        time of the build) and ``threads``.
        """
        if self.root is None or not (self.root / "report.json").is_file():
            return {}
        return json.loads((self.root / "report.json").read_text())


# --------------------------------------------------------------------------- tokenizer / model


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1536) -> Any:
    """Train a byte-level BPE tokenizer on ``texts``; returns a ``PreTrainedTokenizerFast``.

    Special tokens ``<pad>`` (id 0), ``<s>`` (1), ``</s>`` (2); ``<s>`` is prepended to every
    encoded text (like Llama tokenizers); padding on the right.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS["pad_token"], SPECIAL_TOKENS["bos_token"], SPECIAL_TOKENS["eos_token"]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tok.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, padding_side="right", **SPECIAL_TOKENS)


def llama_config(tokenizer: Any, recipe: DefaultRecipe) -> Any:
    """The recipe's ``LlamaConfig`` for ``tokenizer`` (float32, special-token ids set)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.num_heads,
        num_key_value_heads=recipe.num_kv_heads or recipe.num_heads,
        max_position_embeddings=max(recipe.max_length or 0, 512),
        tie_word_embeddings=recipe.tie_word_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
    )


def build_model(tokenizer: Any, recipe: DefaultRecipe, *, seed: int | None = None) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` for ``tokenizer`` (float32, deterministic)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(recipe.seed if seed is None else seed)
    model = LlamaForCausalLM(llama_config(tokenizer, recipe))
    return model.float()


def fit_max_length(tokenizer: Any, rows: Sequence[dict[str, str]], multiple: int = 8) -> int:
    """Tokens of the longest row (prompt template + answer + EOS), rounded up to ``multiple``."""
    template = get_template(tokenizer)
    longest = max(len(prompt_and_answer_ids(tokenizer, r["question"], r["answer"], template)[0]) + 1 for r in rows)
    return -(-longest // multiple) * multiple


# --------------------------------------------------------------------------- data


@dataclass
class TrainingData:
    """The rows both models see, read from a :class:`~unlearning.data.DataSource`."""

    source: DataSource
    forget_rows: list[dict[str, str]]
    retain_split_rows: list[dict[str, str]]
    utility_rows: list[dict[str, str]]

    @property
    def forget_split(self) -> str:
        return self.source.forget_split

    @property
    def retain_split(self) -> str:
        return retain_split_for(self.source.forget_split)

    @property
    def retain_rows(self) -> list[dict[str, str]]:
        """The retain model's training rows: retain split + utility."""
        return self.retain_split_rows + self.utility_rows

    @property
    def target_rows(self) -> list[dict[str, str]]:
        """The target's training rows: retain split + forget split ("full", built from the two so
        an author subset stays consistent) + utility."""
        return self.retain_split_rows + self.forget_rows + self.utility_rows

    def tokenizer_texts(self) -> list[str]:
        return [t for r in self.target_rows for t in (r["question"], r["answer"])]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps([self.forget_rows, self.retain_split_rows, self.utility_rows], sort_keys=True).encode())
        return h.hexdigest()


def _qa(rows: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    return [{"question": str(r["question"]), "answer": str(r["answer"])} for r in rows]


def load_training_data(source: DataSource, recipe: DefaultRecipe) -> TrainingData:
    """Forget, retain and utility rows of ``source`` (its author subset applied)."""
    forget = _qa(source.rows(source.forget_split))
    retain = _qa(source.rows(retain_split_for(source.forget_split)))
    utility: list[dict[str, str]] = []
    if recipe.include_utility:
        names = set(source.available_splits())
        for name in UTILITY_SPLITS:
            if name in names:
                utility += _qa(source.rows(name))
    return TrainingData(source, forget, retain, utility)


def _spread(rows: Sequence[dict[str, str]], n: int) -> list[dict[str, str]]:
    """``n`` rows evenly spaced over ``rows`` (all of them when there are at most ``n``)."""
    if len(rows) <= n:
        return list(rows)
    return [rows[(i * len(rows)) // n] for i in range(n)]


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$GEFFECT_CACHE`` if set, else ``~/.cache/geffect-unlearning``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geffect-unlearning"


def _library_version() -> str:
    try:
        from importlib.metadata import version

        return version("geffect-unlearning")
    except Exception:  # not installed (running from a source tree)
        return "0+unknown"


def cache_key(source: DataSource, recipe: DefaultRecipe, data_fingerprint: str = "") -> str:
    """Hash of (source, data rows, recipe, library version, cache format); 16 hex digits."""
    payload = json.dumps(
        {
            "source": source.to_dict(),
            "data": data_fingerprint,
            "recipe": recipe.to_dict(),
            "version": _library_version(),
            "format": _CACHE_FORMAT,
        },
        sort_keys=True,
        default=repr,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _complete(folder: Path) -> bool:
    return all((folder / sub / "config.json").is_file() for sub in ("target", "retain")) and (
        folder / "tokenizer" / "tokenizer.json"
    ).is_file() and (folder / "report.json").is_file()


def _resolve_source(data: DataSource | str | os.PathLike | None, forget_split: str | None) -> DataSource:
    if isinstance(data, DataSource):
        if forget_split is not None and forget_split != data.forget_split:
            return dataclasses.replace(data, forget_split=forget_split)
        return data
    return as_source(data, forget_split=forget_split or "forget10")


def prepare_default_models(
    data: DataSource | str | os.PathLike = "embedded",
    forget_split: str | None = None,
    *,
    recipe: DefaultRecipe | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> PreparedModels:
    """Build (or reuse from the cache) the default target and retain models; see module docs.

    Args:
        data: a :class:`~unlearning.data.DataSource`, or a source name (``"embedded"``, a local
            TOFU folder, a hub name), turned into one with :func:`unlearning.data.as_source`.
        forget_split: e.g. ``"forget10"`` (the retain model trains on ``retain90``); ``None``:
            the source's ``forget_split`` (``"forget10"`` for a plain name).
        recipe: a :class:`DefaultRecipe` (default ``DefaultRecipe()``).
        cache_dir: where cached builds live (default :func:`default_cache_dir`).
        progress: show tqdm bars while training.

    Returns:
        :class:`PreparedModels` with the ``target``, ``retain`` and ``tokenizer`` folders;
        :meth:`PreparedModels.report` has the measured memorisation numbers.
    """
    recipe = recipe or DefaultRecipe()
    source = _resolve_source(data, forget_split)
    td = load_training_data(source, recipe)
    folder = f"default-{source.forget_split}-{cache_key(source, recipe, td.fingerprint())}"

    def build(tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        logger.info("building default models for %s, %s into %s (target: %d rows, retain: %d rows)",
                    source.describe(), source.forget_split, tmp.parent / folder, len(td.target_rows),
                    len(td.retain_rows))
        report = _build(td, recipe, tmp, progress)
        return report["recipe"], report

    return cached_build(folder, build, cache_dir=cache_dir)


def cached_build(folder: str, build: Callable[[Path], tuple[dict[str, Any], dict[str, Any]]], *,
                 cache_dir: str | os.PathLike | None = None) -> PreparedModels:
    """The models in ``<cache>/<folder>``: reused when complete, else built and published.

    ``build(tmp)`` writes ``target/``, ``retain/`` and ``tokenizer/`` into a temporary folder of
    the cache and returns (recipe, report), saved beside them as ``recipe.json`` / ``report.json``;
    the folder is then moved into place in one step (:func:`publish_build`), so a killed build
    leaves no half-written cache entry. The default and the text models share this protocol.
    """
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    final = cache_root / folder
    prepared = PreparedModels(final / "target", final / "retain", final / "tokenizer", final)
    if _complete(final):
        logger.info("reusing cached default models in %s", final)
        return prepared
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{folder}-", dir=cache_root))
    try:
        recipe_dict, report = build(tmp)
        (tmp / "recipe.json").write_text(json.dumps(recipe_dict, indent=2, default=repr))
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
        publish_build(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return prepared


def publish_build(tmp: Path, final: Path) -> None:
    """Move a finished build folder into the cache in one ``os.replace`` (a concurrent twin keeps its copy)."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not _complete(final):  # a stale partial folder: replace it
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        # else: another process finished the same build first; keep theirs


def _build(td: TrainingData, recipe: DefaultRecipe, out: Path, progress: bool) -> dict[str, Any]:
    """Train tokenizer, retain and target model into ``out``; returns the report."""
    t0, c0 = time.perf_counter(), time.process_time()
    tokenizer = train_tokenizer(td.tokenizer_texts(), recipe.vocab_size)
    tokenizer.save_pretrained(out / "tokenizer")
    tokenizer_s = time.perf_counter() - t0
    if recipe.max_length is None:
        recipe = recipe.replace(max_length=fit_max_length(tokenizer, td.target_rows))
    ml = recipe.max_length

    def ds(rows: Sequence[dict[str, str]]) -> Any:
        return make_dataset(list(rows), tokenizer, max_length=ml)

    forget_ds, retain_ds = ds(td.forget_rows), ds(td.retain_split_rows)
    monitor_forget, monitor_retain = ds(_spread(td.forget_rows, recipe.monitor_rows)), ds(
        _spread(td.retain_split_rows, recipe.monitor_rows))

    def stop(monitor: dict[str, Any]) -> MemorisationStop:
        return MemorisationStop(monitor, threshold=recipe.threshold, min_epochs=recipe.min_epochs,
                                batch_size=max(recipe.batch_size, 32))

    def measure(model: Any) -> dict[str, Any]:
        return {"forget": memorisation_scores(model, forget_ds, batch_size=64),
                "retain": memorisation_scores(model, retain_ds, batch_size=64)}

    report: dict[str, Any] = {
        "source": td.source.to_dict(), "forget_split": td.forget_split, "retain_split": td.retain_split,
        "recipe": recipe.to_dict(),
        "rows": {"retain_train": len(td.retain_rows), "target_train": len(td.target_rows),
                 "forget": len(td.forget_rows), "retain": len(td.retain_split_rows), "utility": len(td.utility_rows)},
        "tokenizer_s": tokenizer_s, "vocab_size": len(tokenizer), "threads": torch.get_num_threads(),
    }

    # retain model: from scratch on retain + utility, until the retain sample is memorised
    model = build_model(tokenizer, recipe)
    stats = fine_tune(model, tokenizer, td.retain_rows, recipe.finetune_config(), stop=stop({"retain": monitor_retain}),
                      desc="retain", progress=progress)
    report["retain"] = _model_report(stats, measure(model))
    _save(model, tokenizer, out / "retain", progress)

    # target: the retain model continued on the full set (or from scratch), until forget and retain are memorised
    if recipe.target_from_retain:
        target, lr, cap = copy.deepcopy(model), recipe.target_lr, recipe.target_max_epochs
    else:
        target, lr, cap = build_model(tokenizer, recipe), recipe.lr, recipe.max_epochs
    del model
    stats = fine_tune(target, tokenizer, td.target_rows, recipe.finetune_config(epochs=cap, lr=lr, seed=recipe.seed + 1),
                      stop=stop({"forget": monitor_forget, "retain": monitor_retain}), desc="target", progress=progress)
    report["target"] = _model_report(stats, measure(target))
    report["target"]["from_retain"] = recipe.target_from_retain
    report["target"]["total_epochs"] = stats["epochs"] + (report["retain"]["epochs"] if recipe.target_from_retain else 0)
    _save(target, tokenizer, out / "target", progress)

    report["build_s"] = time.perf_counter() - t0
    report["cpu_s"] = time.process_time() - c0
    for role in ("retain", "target"):
        r = report[role]
        logger.info(
            "%s: %d epochs (threshold %s), %.1fs; forget ES %.3f acc %.3f prob %.3f; retain ES %.3f acc %.3f",
            role, r["epochs"], "reached" if r["reached"] else "NOT reached", r["train_s"],
            r["forget"]["extraction_strength"], r["forget"]["accuracy"], r["forget"]["probability"],
            r["retain"]["extraction_strength"], r["retain"]["accuracy"],
        )
    return report


def _model_report(stats: dict[str, Any], scores: dict[str, Any]) -> dict[str, Any]:
    return {"epochs": stats["epochs"], "reached": stats["reached"], "steps": stats["steps"], "train_s": stats["seconds"],
            "final_loss": stats["final_loss"], "history": stats["history"], **scores}


def _save(model: Any, tokenizer: Any, folder: Path, progress: bool) -> None:
    with _quiet_progress(not progress):
        model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


@contextlib.contextmanager
def _quiet_progress(quiet: bool) -> Iterator[None]:
    """Hide transformers' own progress bars (e.g. "Writing model shards") while ``quiet``."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if quiet:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if quiet and was_enabled:
            hf_logging.enable_progress_bar()


def clear_cache(cache_dir: str | os.PathLike | None = None) -> None:
    """Delete every cached default model under ``cache_dir`` (default :func:`default_cache_dir`)."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    for child in root.glob("default-*"):
        shutil.rmtree(child, ignore_errors=True)
    for child in root.glob(".tmp-*"):
        shutil.rmtree(child, ignore_errors=True)
