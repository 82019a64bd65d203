"""TOFU-style data: loading, the embedded benchmark, prompt templates, tokenisation, collators.

Quick start::

    from unlearning.data import load_split, QADataset, QACollator
    forget = load_split("embedded", "forget10")            # or a TOFU folder / "locuslab/TOFU"
    ds = QADataset(forget, tokenizer)                       # prompt labels -100, EOS appended
    batch = QACollator(tokenizer.pad_token_id)([ds[0], ds[1]])

See docs/data.md.
"""
from __future__ import annotations

from .embedded import EmbeddedConfig
from .errors import DataError
from .loading import available_splits, load_idk_answers, load_split
from .source import DataSource, as_source
from .qa import ForgetRetainCollator, ForgetRetainDataset, QACollator, QADataset, process_rank
from .splits import holdout_split_for, perturbed_split_for, retain_split_for, tofu_split_names
from .templates import LLAMA2_CHAT, PHI, PLAIN, PromptTemplate, get_template
from .tokenization import tokenize_example
from .text import TextChunkDataset, TextUnlearningData, build_text_unlearning_data, chunk_token_stream
from .muse import MUSE_BOOKS, MUSE_NEWS, knowmem_training_texts, load_muse, muse_texts
from .probes import probe_batches, tokenised_batch
from .wmdp import load_utility_questions, load_wmdp_corpus, load_wmdp_questions, wmdp_texts
from .embedded.news import EmbeddedNewsConfig
from .embedded.hazard import EmbeddedHazardConfig

__all__ = [
    "DataError",
    "EmbeddedHazardConfig",
    "EmbeddedNewsConfig",
    "MUSE_BOOKS",
    "MUSE_NEWS",
    "TextChunkDataset",
    "TextUnlearningData",
    "build_text_unlearning_data",
    "chunk_token_stream",
    "knowmem_training_texts",
    "load_muse",
    "load_utility_questions",
    "load_wmdp_corpus",
    "load_wmdp_questions",
    "muse_texts",
    "wmdp_texts",
    "DataSource",
    "EmbeddedConfig",
    "ForgetRetainCollator",
    "ForgetRetainDataset",
    "LLAMA2_CHAT",
    "PHI",
    "PLAIN",
    "PromptTemplate",
    "QACollator",
    "QADataset",
    "as_source",
    "available_splits",
    "get_template",
    "holdout_split_for",
    "load_idk_answers",
    "load_split",
    "perturbed_split_for",
    "probe_batches",
    "process_rank",
    "retain_split_for",
    "tofu_split_names",
    "tokenised_batch",
    "tokenize_example",
]
