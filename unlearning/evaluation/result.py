"""What every evaluation returns: :class:`EvalResult`, per-instance tables and a summary, and its folder."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from geffect.io import atomic_write, atomic_write_json, atomic_write_parquet, jsonable
from unlearning.runs.folder import EVAL_SUMMARY_FILE, PER_INSTANCE_DIR

__all__ = ["EvalResult"]


@dataclass
class EvalResult:
    """Per-instance tables (one DataFrame per evaluated set) and the summary dict."""

    tables: dict[str, pd.DataFrame]
    summary: dict = field(default_factory=dict)

    def save(self, output_dir: str | os.PathLike, *, fmt: str = "parquet") -> Path:
        """Write ``summary.json`` and ``per_instance/<set>.<fmt>`` (fmt: parquet or jsonl) atomically."""
        if fmt not in ("parquet", "jsonl"):
            raise ValueError(f"fmt must be 'parquet' or 'jsonl', got {fmt!r}")
        out = Path(output_dir)
        for name, df in self.tables.items():
            target = out / PER_INSTANCE_DIR / f"{name}.{fmt}"
            if fmt == "parquet":
                atomic_write_parquet(target, df)
            else:
                atomic_write(target, lambda fh, df=df: df.to_json(fh, orient="records", lines=True, double_precision=15))
        atomic_write_json(out / EVAL_SUMMARY_FILE, jsonable(self.summary))
        return out

    @classmethod
    def load(cls, output_dir: str | os.PathLike) -> EvalResult:
        """Read a directory written by :meth:`save`."""
        out = Path(output_dir)
        summary = json.loads((out / EVAL_SUMMARY_FILE).read_text())
        tables = {}
        for p in sorted((out / PER_INSTANCE_DIR).glob("*")):
            if p.suffix == ".parquet":
                tables[p.stem] = pd.read_parquet(p)
            elif p.suffix == ".jsonl":
                tables[p.stem] = pd.read_json(p, orient="records", lines=True)
        return cls(tables=tables, summary=summary)
