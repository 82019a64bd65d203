"""One value for "which data": :class:`DataSource` (source name, embedded recipe, author subset).

Everything that reads TOFU-style rows (model preparation, unlearning, evaluation, the
studies) takes a ``DataSource`` instead of a ``(data, config, max_authors)`` tuple::

    src = DataSource("../tofu", max_authors=8, forget_split="forget01")
    src.load_split("retain99")        # the first 7 retain authors only
    src.load_split("forget01")        # unchanged

**Author subsets** (``max_authors``): TOFU orders ``full`` by author (author k = rows
20k..20k+19), ``retainXX`` are its first rows and ``forgetXX`` its last. A subset keeps the
forget authors of ``forget_split`` plus the first ``max_authors - n_forget_authors`` retain
authors: every ``retain*`` split (``retain90/95/99``, ``retain_perturbed``) keeps its first
``keep`` rows, ``full`` keeps its first ``keep`` rows followed by the forget rows, and every
other split (forget, holdout, real authors, world facts) is served unchanged. This is the only
implementation of author subsetting in the project.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

import datasets

from .embedded import EmbeddedConfig
from .errors import DataError
from .loading import EMBEDDED, available_splits, load_idk_answers, load_split

logger = logging.getLogger(__name__)

__all__ = ["DataSource", "as_source"]

#: Questions per author in TOFU (and in the default embedded benchmark).
TOFU_QA_PER_AUTHOR = 20


@dataclass(frozen=True)
class DataSource:
    """A TOFU-style benchmark to read: ``name`` plus how to size or cut it.

    Args:
        name: ``"embedded"``, a local folder of TOFU's JSON-lines files, or a hub name
            (``"locuslab/TOFU"``).
        embedded: the :class:`EmbeddedConfig` of the embedded benchmark (``None`` = default);
            only with ``name="embedded"``.
        max_authors: keep the forget authors plus retain authors up to this many in total
            (``None`` = all); see the module docstring.
        forget_split: the forget split the subset is built around (its authors are kept).
        columns: column renames passed to :func:`load_split` (``{their_name: our_name}``).
    """

    name: str = EMBEDDED
    embedded: EmbeddedConfig | None = None
    max_authors: int | None = None
    forget_split: str = "forget10"
    columns: tuple[tuple[str, str], ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.name, os.PathLike):
            object.__setattr__(self, "name", os.fspath(self.name))
        if self.embedded is not None and self.name != EMBEDDED:
            raise DataError(f"an embedded config only applies to name='embedded', not to {self.name!r}; drop it")
        if self.max_authors is not None and (not isinstance(self.max_authors, int) or self.max_authors < 2):
            raise DataError(f"max_authors must be an int >= 2 (one forget and one retain author), got {self.max_authors!r}")
        if isinstance(self.columns, dict):
            object.__setattr__(self, "columns", tuple(sorted(self.columns.items())))

    # ---- reading --------------------------------------------------------------------------
    @property
    def questions_per_author(self) -> int:
        return self.embedded.qa_per_author if self.embedded is not None else TOFU_QA_PER_AUTHOR

    def _load(self, split: str) -> datasets.Dataset:
        return load_split(self.name, split, config=self.embedded, columns=dict(self.columns) if self.columns else None)

    def retain_rows_kept(self) -> int | None:
        """Rows each ``retain*`` split keeps under ``max_authors`` (``None``: no subset)."""
        if self.max_authors is None:
            return None
        n_forget = len(self._load(self.forget_split))
        n_forget_authors = max(1, -(-n_forget // self.questions_per_author))
        return max(1, self.max_authors - n_forget_authors) * self.questions_per_author

    def load_split(self, split: str) -> datasets.Dataset:
        """One split, cut to the author subset when ``max_authors`` is set."""
        ds = self._load(split)
        keep = self.retain_rows_kept()
        if keep is None:
            return ds
        if split.startswith("retain"):
            return ds.select(range(min(keep, len(ds))))
        if split == "full":
            forget = self._load(self.forget_split)
            n = len(ds)
            return ds.select([*range(min(keep, n)), *range(max(keep, n - len(forget)), n)])
        return ds

    def rows(self, split: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The first ``limit`` rows of a split as plain dicts (all rows when ``limit`` is None)."""
        ds = self.load_split(split)
        if limit is not None:
            ds = ds.select(range(min(limit, len(ds))))
        return [dict(r) for r in ds]

    def available_splits(self) -> list[str]:
        return available_splits(self.name)

    def idk_answers(self) -> list[str]:
        return load_idk_answers(self.name)

    # ---- identity -------------------------------------------------------------------------
    @property
    def is_embedded(self) -> bool:
        return self.name == EMBEDDED

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able description; also the value cache keys are built from."""
        out = dataclasses.asdict(self)
        if self.name != EMBEDDED:
            out["name"] = os.path.abspath(os.path.expanduser(self.name)) if os.path.exists(
                os.path.expanduser(self.name)) else self.name
        return out

    def describe(self) -> str:
        what = self.name if self.name != EMBEDDED else "the embedded benchmark"
        if self.embedded is not None:
            what += f" ({self.embedded.num_authors} authors x {self.embedded.qa_per_author} QA)"
        if self.max_authors is not None:
            what += f", {self.max_authors} authors kept"
        return what


def as_source(data: DataSource | str | os.PathLike | None = None, *, config: EmbeddedConfig | None = None,
              **kwargs: Any) -> DataSource:
    """A :class:`DataSource` from a source value, a name (+ embedded ``config``), or ``None`` (embedded)."""
    if isinstance(data, DataSource):
        if config is not None or kwargs:
            return dataclasses.replace(data, **({"embedded": config} if config is not None else {}), **kwargs)
        return data
    return DataSource(EMBEDDED if data is None else os.fspath(data), embedded=config, **kwargs)
