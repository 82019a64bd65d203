"""Default target / retain models for raw-text benchmarks (MUSE, WMDP): trained from scratch on the corpus.

The text analogue of :func:`unlearning.models.prepare_default_models`: with no download, a
study of a text benchmark still needs a *target* model that read the forget documents and a
*retain* model that did not (MUSE's target / retrained pair). :func:`prepare_text_models`
builds both from the same pieces:

1. a byte-level BPE tokenizer (:func:`unlearning.models.train_tokenizer`) trained on every text
   either model sees;
2. a ``LlamaConfig`` sized by a :class:`unlearning.models.DefaultRecipe`
   (:func:`unlearning.models.build_model`, seeded);
3. the TARGET trained on ``target_texts``, the RETAIN model on ``retain_texts``, both with
   :func:`unlearning.models.training.fine_tune` (next-token loss on every token) over
   :class:`unlearning.data.TextChunkDataset` chunks of ``chunk_length`` tokens;
4. both saved with ``save_pretrained`` (tokenizer files in each folder).

The result is cached under ``cache_dir`` (default ``$GEFFECT_CACHE`` or
``~/.cache/geffect-unlearning``) in ``<name>-<key>``, the key hashing the texts, the chunking,
the recipe and the library version; a build happens in a temporary folder renamed into place at
the end (a killed run leaves no half-written cache)::

    from unlearning.models import DefaultRecipe, prepare_text_models
    prepared = prepare_text_models("muse-news", forget + retain, retain, recipe=DefaultRecipe(max_epochs=40))
    prepared.target, prepared.retain, prepared.report()
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from unlearning.data import DataSource, TextChunkDataset
from unlearning.models.training import fine_tune
from unlearning.models.default import (
    DefaultRecipe,
    PreparedModels,
    _quiet_progress,
    build_model,
    cache_key,
    cached_build,
    train_tokenizer,
)

logger = logging.getLogger(__name__)

__all__ = ["prepare_text_models"]


def _fingerprint(target_texts: Sequence[str], retain_texts: Sequence[str], tokenizer_texts: Sequence[str],
                 chunk_length: int, packing: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"chunk_length": chunk_length, "packing": packing}, sort_keys=True).encode())
    for texts in (target_texts, retain_texts, tokenizer_texts):
        h.update(json.dumps(list(texts)).encode())
    return h.hexdigest()


def prepare_text_models(
    name: str,
    target_texts: Sequence[str],
    retain_texts: Sequence[str],
    *,
    recipe: DefaultRecipe | None = None,
    chunk_length: int = 128,
    packing: str = "document",
    tokenizer_texts: Sequence[str] | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> PreparedModels:
    """Build (or reuse from the cache) a target and a retain model trained on raw text; see the module docs.

    Args:
        name: the cache folder's prefix (e.g. ``"muse-embedded"``); letters, digits, ``-`` and ``_``.
        target_texts / retain_texts: the documents each model is trained on.
        recipe: model size and training recipe (default ``DefaultRecipe()``; its ``max_length``
            sets the model's positions and must be at least ``chunk_length``).
        chunk_length: tokens per training chunk, BOS included.
        packing: ``"document"`` (a chunk never crosses a document) or ``"concat"``
            (:class:`unlearning.data.TextChunkDataset`).
        tokenizer_texts: the tokenizer's training texts (default: target + retain texts).
        cache_dir: where cached builds live (default :func:`unlearning.models.default_cache_dir`).
        progress: show tqdm bars while training.

    Returns:
        :class:`PreparedModels`; ``report()`` holds training times, final losses and chunk counts.
    """

    if not name or not all(ch.isalnum() or ch in "-_" for ch in name):
        raise ValueError(f"name must be letters, digits, '-' or '_' (it names a cache folder), got {name!r}")
    recipe = recipe or DefaultRecipe()
    if recipe.max_length is None:  # positions for every chunk token
        recipe = dataclasses.replace(recipe, max_length=chunk_length)
    if recipe.max_length < chunk_length:
        raise ValueError(f"recipe.max_length={recipe.max_length} is shorter than chunk_length={chunk_length}; the "
                         "model needs a position for every chunk token")
    target_texts, retain_texts = [str(t) for t in target_texts], [str(t) for t in retain_texts]
    if not target_texts or not retain_texts:
        raise ValueError("prepare_text_models needs texts for both models (target_texts and retain_texts)")
    tok_texts = [str(t) for t in tokenizer_texts] if tokenizer_texts is not None else target_texts + retain_texts
    key = cache_key(DataSource(name=f"text:{name}"), recipe,
                    _fingerprint(target_texts, retain_texts, tok_texts, chunk_length, packing))

    def build(tmp: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        logger.info("building default text models %s into %s (target: %d texts, retain: %d texts)", name,
                    tmp.parent / f"{name}-{key}", len(target_texts), len(retain_texts))
        t0 = time.perf_counter()
        tokenizer = train_tokenizer(tok_texts, recipe.vocab_size)
        tokenizer.save_pretrained(tmp / "tokenizer")
        report: dict[str, Any] = {"name": name, "chunk_length": chunk_length, "packing": packing,
                                  "tokenizer_s": time.perf_counter() - t0}
        for role, texts in (("target", target_texts), ("retain", retain_texts)):
            t1 = time.perf_counter()
            data = TextChunkDataset(texts, tokenizer, max_length=chunk_length, packing=packing)
            model = build_model(tokenizer, recipe)
            stats = fine_tune(model, tokenizer, data, recipe.finetune_config(max_length=chunk_length), progress=progress,
                              desc=role)
            report.update({f"{role}_train_s": time.perf_counter() - t1, f"{role}_final_loss": stats.get("final_loss"),
                           f"{role}_chunks": len(data), f"{role}_tokens": data.num_tokens,
                           f"{role}_steps": stats.get("steps")})
            with _quiet_progress(not progress):
                model.save_pretrained(tmp / role)
            tokenizer.save_pretrained(tmp / role)
            logger.info("%s trained in %.1fs on %d chunks (final loss %.4f)", role, report[f"{role}_train_s"],
                        len(data), report[f"{role}_final_loss"])
        return recipe.to_dict(), report

    return cached_build(f"{name}-{key}", build, cache_dir=cache_dir)
