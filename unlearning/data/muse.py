"""MUSE (Shi et al. 2024) data: the embedded news analogue, a local folder, or the hub.

``load_muse(source, subset, split)`` returns one split as a :class:`datasets.Dataset` with the
hub's columns; ``source`` is

* ``"embedded"`` (default): the generated news corpus of :mod:`.embedded.news`;
* a local folder laid out like ``swj0419/muse_bench``'s ``load_data.py`` output, i.e.
  ``<folder>/<subset>/<split>.json`` (``raw/forget.json``, ``verbmem/forget.json``,
  ``knowmem/forget_qa.json``, ``privleak/holdout.json``, ...), or a snapshot of the hub
  repository (``<folder>/<subset>/<split>-*.parquet``); see :mod:`.records`;
* a hub name, ``"muse-bench/MUSE-News"`` or ``"muse-bench/MUSE-Books"``:
  ``datasets.load_dataset(name, subset, split=split)``.

========  ===========================================================  ================
subset    splits                                                       columns
========  ===========================================================  ================
raw       forget, retain1, retain2, holdout                            text
verbmem   forget                                                       prompt, gt
knowmem   forget_qa, forget_qa_icl, retain_qa, retain_qa_icl           question, answer
privleak  forget, retain, holdout                                      text
scal      forget_1 .. forget_4 (News)                                  text
sust      forget_1 .. forget_4 (News)                                  text
========  ===========================================================  ================

MUSE-Books and earlier revisions of MUSE-News name the retain splits ``retain2_qa``,
``retain2_qa_icl`` and ``privleak/retain2``; either name is accepted and the other one is
tried when the first is missing.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import datasets

from .embedded.news import NEWS_SPLITS, EmbeddedNewsConfig, news_rows
from .errors import DataError
from .loading import EMBEDDED, _as_str, _existing_folder, _source_kind
from .records import find_split_file, read_records, records_to_dataset

logger = logging.getLogger(__name__)

__all__ = [
    "MUSE_BOOKS",
    "MUSE_COLUMNS",
    "MUSE_NEWS",
    "MUSE_SPLITS",
    "knowmem_training_texts",
    "load_muse",
    "muse_texts",
]

MUSE_NEWS = "muse-bench/MUSE-News"
MUSE_BOOKS = "muse-bench/MUSE-Books"
MUSE_COLUMNS = {
    "raw": ("text",), "verbmem": ("prompt", "gt"), "knowmem": ("question", "answer"), "privleak": ("text",),
    "scal": ("text",), "sust": ("text",), "train": ("text",),
}
MUSE_SPLITS = {
    **NEWS_SPLITS,
    "scal": tuple(f"forget_{k}" for k in range(1, 5)),
    "sust": tuple(f"forget_{k}" for k in range(1, 5)),
    "train": ("forget", "retain1", "retain2"),
}
_ALIASES = {
    ("knowmem", "retain_qa"): "retain2_qa", ("knowmem", "retain2_qa"): "retain_qa",
    ("knowmem", "retain_qa_icl"): "retain2_qa_icl", ("knowmem", "retain2_qa_icl"): "retain_qa_icl",
    ("privleak", "retain"): "retain2", ("privleak", "retain2"): "retain",
}


def _names(subset: str, split: str) -> list[str]:
    alias = _ALIASES.get((subset, split))
    return [split] if alias is None else [split, alias]


def _check_names(subset: str, split: str) -> None:
    if subset not in MUSE_SPLITS:
        raise DataError(f"unknown MUSE subset {subset!r}; valid: {', '.join(MUSE_SPLITS)}")
    valid = set(MUSE_SPLITS[subset]) | {a for (s, _), a in _ALIASES.items() if s == subset}
    if split not in valid:
        raise DataError(f"MUSE subset {subset!r} has no split {split!r}; valid: {', '.join(sorted(valid))}")


def load_muse(
    source: str | os.PathLike = EMBEDDED,
    subset: str = "raw",
    split: str = "forget",
    *,
    embedded: EmbeddedNewsConfig | None = None,
) -> datasets.Dataset:
    """One MUSE split as a :class:`datasets.Dataset` (columns: see the module docstring)."""
    source = _as_str(source)
    _check_names(subset, split)
    kind = _source_kind(source)
    if embedded is not None and kind != EMBEDDED:
        raise DataError(f"embedded= only applies to source='embedded', not to {source!r}; drop it")
    where = f"MUSE {subset}/{split} of {source!r}"
    if kind == EMBEDDED:
        if subset not in NEWS_SPLITS:
            raise DataError(f"the embedded news corpus has the subsets {', '.join(NEWS_SPLITS)}, not {subset!r}")
        split = _names(subset, split)[-1] if split not in NEWS_SPLITS[subset] else split
        rows = news_rows(embedded or EmbeddedNewsConfig(), subset, split)
    elif kind == "folder":
        folder = _existing_folder(Path(source).expanduser()) / subset
        paths = find_split_file(folder, _names(subset, split)) if folder.is_dir() else None
        if paths is None:
            present = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
            raise DataError(
                f"{where}: no file {folder / split}.json (or .jsonl, or parquet shards); files there: "
                f"{present or 'none'}. Lay the folder out as <folder>/{subset}/{split}.json"
            )
        rows = read_records(paths)
    else:
        return _load_hub(source, subset, split, where)
    return records_to_dataset(rows, MUSE_COLUMNS[subset], where)


def _load_hub(name: str, subset: str, split: str, where: str) -> datasets.Dataset:
    errors = []
    for candidate in _names(subset, split):
        try:
            ds = datasets.load_dataset(name, subset, split=candidate)
        except Exception as exc:  # unknown split on this revision, offline, wrong name, ...
            errors.append(f"{candidate}: {type(exc).__name__}: {exc}")
            continue
        missing = [c for c in MUSE_COLUMNS[subset] if c not in ds.column_names]
        if missing:
            raise DataError(f"{where} lacks the columns {missing}; its columns are {ds.column_names}")
        return ds
    raise DataError(
        f"could not load {where} ({'; '.join(errors)}). Check the name and your network (HF_HUB_OFFLINE / "
        "HF_DATASETS_OFFLINE must be unset to download), or pass a local folder laid out as "
        "<folder>/<subset>/<split>.json, or use source='embedded'"
    )


def muse_texts(
    source: str | os.PathLike = EMBEDDED, split: str = "forget", *, subset: str = "raw",
    embedded: EmbeddedNewsConfig | None = None,
) -> list[str]:
    """The documents of a text split (``raw``, ``privleak``, ``scal``, ``sust``) as strings."""
    if "text" not in MUSE_COLUMNS.get(subset, ()):
        raise DataError(f"MUSE subset {subset!r} holds no documents; use raw, privleak, scal or sust")
    return [str(t) for t in load_muse(source, subset, split, embedded=embedded)["text"]]


def knowmem_training_texts(
    source: str | os.PathLike = EMBEDDED, splits: tuple[str, ...] = ("forget_qa", "retain_qa"), *,
    embedded: EmbeddedNewsConfig | None = None,
) -> list[str]:
    """KnowMem QA pairs rendered as ``"Question: {q}\\nAnswer: {a}"`` texts (MUSE's prompt format).

    A large pretrained model answers MUSE's questions from what it read in the documents; a
    small model trained from scratch on a few dozen documents does not transfer facts from
    prose to question form. Adding these texts to a *from-scratch* target model's training
    corpus (and the retain ones to the retain model's) makes KnowMem measurable there; it is
    not part of MUSE's protocol.
    """
    out = []
    for split in splits:
        for row in load_muse(source, "knowmem", split, embedded=embedded):
            out.append(f"Question: {row['question']}\nAnswer: {row['answer']}")
    return out
