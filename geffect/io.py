"""Atomic file writes and JSON encoding shared by every package of the project.

Every file the toolkit writes while a run goes on (tracker parts, manifests, evaluation tables,
run configs, study markers, weight masks) goes through :func:`atomic_path`: the content is
written to a temporary file in the same folder, flushed and ``fsync``-ed, then moved into place
with ``os.replace``, so a killed process leaves either the old file or the complete new one,
never a torn one. :func:`atomic_write` hands the writer an open file instead of a path.
:class:`JSONEncoder` is the one JSON encoder: it writes numpy scalars and arrays, tensors, paths,
dataclasses and sets as plain JSON values; :func:`jsonable` also turns NaN into ``null``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = ["JSONEncoder", "atomic_path", "atomic_write", "atomic_write_json",
           "atomic_write_parquet", "atomic_write_text", "dumps", "jsonable"]


class JSONEncoder(json.JSONEncoder):
    """JSON for the values a study produces: numpy / torch scalars and arrays, paths, dataclasses, sets."""

    def default(self, obj: Any) -> Any:  # noqa: D102 - json.JSONEncoder API
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.asdict(obj)
        if isinstance(obj, os.PathLike):
            return os.fspath(obj)
        if isinstance(obj, (set, frozenset)):
            return sorted(obj, key=str)
        tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars, torch tensors
        if callable(tolist):
            return tolist()
        item = getattr(obj, "item", None)
        if callable(item):
            return item()
        return str(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` with :class:`JSONEncoder`."""
    return json.dumps(obj, cls=JSONEncoder, **kwargs)


def jsonable(obj: Any) -> Any:
    """``obj`` with mappings, lists and tuples rebuilt and float NaN replaced by ``None``.

    Strict JSON has no NaN; an undefined metric (e.g. a mean over an empty set) is written as
    ``null``. Other values are left for :class:`JSONEncoder`.
    """
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):  # float, numpy floats
        return None if math.isnan(float(obj)) else float(obj)
    return obj


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it is ``fsync``-ed and moved onto ``path``.

    For writers that need a file name (``safetensors.torch.save_file``, ...). The parent folder
    is created. On any error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = False) -> Path:
    """Write ``path`` through ``write(file)`` on a temporary sibling (:func:`atomic_path`). Returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (:class:`JSONEncoder`) atomically."""
    return atomic_write_text(path, dumps(obj, indent=indent) + "\n")


def atomic_write_parquet(path: str | os.PathLike, frame: Any) -> Path:
    """Write a pandas DataFrame as Parquet (no index) atomically."""
    return atomic_write(path, lambda fh: frame.to_parquet(fh, index=False), binary=True)
