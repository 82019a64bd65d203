"""WMDP (Li et al. 2024) data: questions, forget/retain corpora and the utility set.

Sources (``source``):

* ``"embedded"`` (default): the generated analogue of :mod:`.embedded.hazard`;
* a local folder: questions ``<folder>/wmdp-bio.json[l]`` (or ``<folder>/wmdp-bio/test*``
  parquet shards of a hub snapshot), corpora ``<folder>/<name>-corpus.jsonl`` or
  ``<folder>/wmdp-corpora/<name>-corpus.jsonl`` (the layout of the official corpora archive;
  each line a JSON object with ``text`` or a JSON string), utility ``<folder>/mmlu.json[l]``;
* hub names: questions ``"cais/wmdp"`` (configs ``wmdp-bio``, ``wmdp-cyber``, ``wmdp-chem``,
  split ``test``), corpora ``"cais/wmdp-corpora"`` (configs ``cyber-forget-corpus``,
  ``cyber-retain-corpus``, ``bio-retain-corpus``, split ``train``; the bio forget corpus is
  distributed on request only, so it must come from a folder), utility ``"cais/mmlu"``
  (config ``all``, split ``test``); the corpus ``"wikitext"`` is WikiText-2 (raw, test split),
  the retain corpus of the official RMU script.

Questions have the hub's columns: ``question`` (str), ``choices`` (list of 4 str), ``answer``
(int, index of the right choice).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import datasets

from .embedded.hazard import EmbeddedHazardConfig, hazard_corpus, hazard_questions
from .errors import DataError
from .loading import EMBEDDED, _as_str, _existing_folder, _source_kind
from .records import find_split_file, read_records, records_to_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "MMLU",
    "WMDP_CORPORA",
    "WMDP_CORPUS_NAMES",
    "WMDP_QUESTIONS",
    "WMDP_SUBSETS",
    "load_utility_questions",
    "load_wmdp_corpus",
    "load_wmdp_questions",
    "wmdp_texts",
]

WMDP_QUESTIONS = "cais/wmdp"
WMDP_CORPORA = "cais/wmdp-corpora"
MMLU = "cais/mmlu"
WMDP_SUBSETS = ("bio", "cyber", "chem")
WMDP_CORPUS_NAMES = ("bio-forget", "cyber-forget", "bio-retain", "cyber-retain", "wikitext")
MC_COLUMNS = ("question", "choices", "answer")


def _check_mc(ds: datasets.Dataset, where: str) -> datasets.Dataset:
    missing = [c for c in MC_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"{where} lacks the columns {missing}; its columns are {ds.column_names}")
    for i, row in enumerate(ds.select(range(min(len(ds), 50)))):
        if not (isinstance(row["answer"], int) and 0 <= row["answer"] < len(row["choices"])):
            raise DataError(f"{where} row {i}: answer must be the int index of a choice, got {row['answer']!r}")
    return ds


def _hub(name: str, config: str | None, split: str, where: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as exc:
        raise DataError(
            f"could not load {where} ({type(exc).__name__}: {exc}). Check the name and your network "
            "(HF_HUB_OFFLINE / HF_DATASETS_OFFLINE must be unset to download), or pass a local folder, "
            "or use source='embedded'"
        ) from exc


def _folder_rows(source: str, stems: list[str], where: str) -> list[dict]:
    folder = _existing_folder(Path(source).expanduser())
    for base in (folder, folder / "wmdp-corpora"):
        paths = find_split_file(base, stems) if base.is_dir() else None
        if paths is not None:
            return read_records(paths)
    present = sorted(p.name for p in folder.iterdir())
    raise DataError(f"{where}: none of {[s + '.jsonl' for s in stems]} in {folder} (files there: {present or 'none'})")


def load_wmdp_questions(
    source: str | os.PathLike = EMBEDDED, subset: str = "bio", *, embedded: EmbeddedHazardConfig | None = None
) -> datasets.Dataset:
    """The multiple-choice questions of ``wmdp-<subset>`` (bio, cyber, chem)."""
    source = _as_str(source)
    if subset not in WMDP_SUBSETS:
        raise DataError(f"unknown WMDP subset {subset!r}; valid: {', '.join(WMDP_SUBSETS)}")
    kind = _source_kind(source)
    where = f"WMDP questions wmdp-{subset} of {source!r}"
    if kind == EMBEDDED:
        ds = records_to_dataset(hazard_questions(embedded or EmbeddedHazardConfig(), subset), MC_COLUMNS, where)
    elif kind == "folder":
        rows = _folder_rows(source, [f"wmdp-{subset}", f"wmdp-{subset}/test"], where)
        ds = records_to_dataset(rows, MC_COLUMNS, where)
    else:
        ds = _hub(source, f"wmdp-{subset}", "test", where)
    return _check_mc(ds, where)


def load_utility_questions(
    source: str | os.PathLike = EMBEDDED, *, subject: str = "all", embedded: EmbeddedHazardConfig | None = None
) -> datasets.Dataset:
    """The general-knowledge multiple-choice set (MMLU, or its embedded analogue)."""
    source = _as_str(source)
    kind = _source_kind(source)
    where = f"utility questions ({subject}) of {source!r}"
    if kind == EMBEDDED:
        ds = records_to_dataset(hazard_questions(embedded or EmbeddedHazardConfig(), "mmlu"), MC_COLUMNS, where)
    elif kind == "folder":
        ds = records_to_dataset(_folder_rows(source, ["mmlu", "mmlu/test", f"mmlu/{subject}"], where), MC_COLUMNS, where)
    else:
        ds = _hub(source, subject, "test", where)
    if subject != "all" and "subject" in ds.column_names and kind != "hub":
        ds = ds.filter(lambda r: r["subject"] == subject)
    return _check_mc(ds, where)


def _corpus_name(name: str) -> str:
    base = name[: -len("-corpus")] if name.endswith("-corpus") else name
    if base not in WMDP_CORPUS_NAMES:
        raise DataError(f"unknown WMDP corpus {name!r}; valid: {', '.join(WMDP_CORPUS_NAMES)}")
    return base


def load_wmdp_corpus(
    source: str | os.PathLike = EMBEDDED, name: str = "cyber-forget", *, min_chars: int = 0,
    embedded: EmbeddedHazardConfig | None = None,
) -> datasets.Dataset:
    """A forget or retain corpus as a ``text`` dataset; documents of at most ``min_chars`` characters dropped.

    ``name``: bio-forget, cyber-forget, bio-retain, cyber-retain (``-corpus`` suffix optional)
    or wikitext. The official RMU script keeps the raw JSON line of the cyber corpora as text;
    we decode it (docs/muse_wmdp.md).
    """
    source = _as_str(source)
    base = _corpus_name(name)
    kind = _source_kind(source)
    where = f"WMDP corpus {base} of {source!r}"
    if kind == EMBEDDED:
        ds = records_to_dataset(hazard_corpus(embedded or EmbeddedHazardConfig(), base), ("text",), where)
    elif kind == "folder":
        stems = [f"{base}-corpus", base] if base != "wikitext" else ["wikitext", "wikitext-2-raw-v1"]
        ds = records_to_dataset(_folder_rows(source, stems, where), ("text",), where)
    elif base == "wikitext":
        ds = _hub("wikitext" if source in (WMDP_CORPORA, "wikitext") else source, "wikitext-2-raw-v1", "test", where)
    else:
        if base == "bio-forget":
            raise DataError(
                "the WMDP bio forget corpus is not on the hub (it is distributed on request); put "
                "bio-forget-corpus.jsonl in a folder and pass that folder as source"
            )
        ds = _hub(source, f"{base}-corpus", "train", where)
    if min_chars > 0:
        ds = ds.filter(lambda r: len(r["text"]) > min_chars)
    if len(ds) == 0:
        raise DataError(f"{where} has no document longer than min_chars={min_chars}")
    return ds


def wmdp_texts(source: str | os.PathLike = EMBEDDED, name: str = "cyber-forget", **kwargs) -> list[str]:
    """:func:`load_wmdp_corpus` as a list of strings."""
    return [str(t) for t in load_wmdp_corpus(source, name, **kwargs)["text"]]
