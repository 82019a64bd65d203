"""Read one split of a benchmark stored as files: JSON arrays, JSON lines or hub parquet shards.

The MUSE and WMDP loaders accept a local folder laid out like the benchmark's own download
scripts or a snapshot of its hub repository. One split may be stored as

* ``<stem>.json``: a JSON array (of strings or objects), as ``swj0419/muse_bench``'s
  ``load_data.py`` writes it; a file that is not one array is read as JSON lines;
* ``<stem>.jsonl``: one JSON value per line (an object, or a string);
* ``<stem>-*.parquet`` / ``<stem>/*.parquet``: the shards of a hub snapshot.

A string value becomes ``{"text": value}``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

import datasets

from .errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["find_split_file", "read_records", "records_to_dataset"]


def find_split_file(folder: Path, stems: Iterable[str]) -> list[Path] | None:
    """The file(s) holding the first of ``stems`` that exists under ``folder`` (None if none)."""
    for stem in stems:
        for suffix in (".json", ".jsonl"):
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return [path]
        shards = sorted(folder.glob(f"{stem}-*.parquet")) or sorted((folder / stem).glob("*.parquet"))
        if shards:
            return shards
    return None


def _as_record(value, path: Path) -> dict:
    if isinstance(value, str):
        return {"text": value}
    if isinstance(value, dict):
        return value
    raise DataError(f"{path}: every entry must be a JSON object or a string, got {type(value).__name__}")


def read_records(paths: list[Path]) -> list[dict]:
    """The rows stored in ``paths`` (one split), as dicts."""
    if paths[0].suffix == ".parquet":
        ds = datasets.load_dataset("parquet", data_files=[str(p) for p in paths], split="train")
        return ds.to_list()
    path = paths[0]
    raw = path.read_text(encoding="utf-8")
    if not raw.strip():
        raise DataError(f"{path} is empty; fill it with the split's rows or choose another split")
    if path.suffix == ".json":
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None  # not a single JSON document: try JSON lines
        if isinstance(value, list):
            return [_as_record(v, path) for v in value]
    rows = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(_as_record(json.loads(line), path))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} line {n} is not valid JSON ({exc}); use a JSON array or one JSON value per line") from exc
    return rows


def records_to_dataset(rows: list[dict], columns: tuple[str, ...], where: str) -> datasets.Dataset:
    """A :class:`datasets.Dataset` of ``rows``; :class:`DataError` when empty or lacking ``columns``."""
    if not rows:
        raise DataError(f"{where} is empty; check the file or choose a non-empty split")
    missing = [c for c in columns if c not in rows[0]]
    if missing:
        raise DataError(f"{where} lacks the columns {missing}; its rows have {sorted(rows[0])}")
    return datasets.Dataset.from_list(rows)
