"""Batches as plain dicts of tensors: select rows, concatenate, pad tokenised rows, move, store.

A batch is a dict of ``input_ids``, ``attention_mask``, ``labels`` (B, T; ``IGNORE_INDEX`` off
the answer tokens) and optionally ``index`` (B,); an unlearning step's *inputs* may nest
batches (``{"forget": batch, "retain": batch}``, open-unlearning's layout).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from geffect.losses import IGNORE_INDEX

__all__ = ["concat_batches", "load_batches", "pad_rows", "select_rows", "to_cpu", "to_device"]


def select_rows(batch: Mapping[str, Any], positions: Sequence[int]) -> dict[str, Any]:
    """The rows ``positions`` of every (N, ...) tensor of a batch (other entries unchanged)."""
    n = int(batch["input_ids"].shape[0])
    idx = torch.tensor(list(positions), dtype=torch.long)
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n:
            out[k] = v[idx.to(v.device)]
        else:
            out[k] = v
    return out


def concat_batches(batches: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Concatenate right-padded batches along B, padding T to the longest (labels with
    ``IGNORE_INDEX``, attention mask and input ids with 0 — masked positions never matter).
    ``index`` is kept when every batch has one."""
    if not batches:
        raise ValueError("concat_batches needs at least one batch")
    T = max(int(b["input_ids"].shape[1]) for b in batches)
    pad_values = {"labels": IGNORE_INDEX}
    out: dict[str, torch.Tensor] = {}
    for key in ("input_ids", "attention_mask", "labels"):
        parts = []
        for b in batches:
            t = b[key] if key in b else torch.ones_like(b["input_ids"])
            if t.shape[1] < T:
                t = torch.nn.functional.pad(t, (0, T - t.shape[1]), value=pad_values.get(key, 0))
            parts.append(t)
        out[key] = torch.cat(parts)  # (sum B, T)
    if all(isinstance(b.get("index"), torch.Tensor) for b in batches):
        out["index"] = torch.cat([b["index"] for b in batches])
    return out


def pad_rows(rows: Sequence[Mapping[str, Any]], pad_token_id: int = 0) -> dict[str, torch.Tensor]:
    """Right-pad tokenised rows (``input_ids``, ``labels``, optional ``attention_mask`` / ``index``)
    into one batch; ``index`` defaults to the row position."""
    if not rows:
        raise ValueError("pad_rows got no rows")
    if "labels" not in rows[0]:
        raise ValueError("tokenised rows need `labels` (IGNORE_INDEX = -100 on prompt and padding tokens) to know "
                         "which tokens are the answer")
    ids, labels, masks, index = [], [], [], []
    for i, row in enumerate(rows):
        x = torch.as_tensor(row["input_ids"], dtype=torch.long).flatten()
        y = torch.as_tensor(row["labels"], dtype=torch.long).flatten()
        if x.shape != y.shape:
            raise ValueError(f"row {i}: labels have {y.numel()} entries, input_ids {x.numel()}")
        am = row.get("attention_mask")
        ids.append(x)
        labels.append(y)
        masks.append(torch.ones_like(x) if am is None else torch.as_tensor(am, dtype=torch.long).flatten())
        index.append(i if row.get("index") is None else int(row["index"]))

    def pad(seqs, value):
        return torch.nn.utils.rnn.pad_sequence(seqs, batch_first=True, padding_value=value)  # (B, T)

    return {"input_ids": pad(ids, int(pad_token_id)), "attention_mask": pad(masks, 0), "labels": pad(labels, IGNORE_INDEX),
            "index": torch.tensor(index, dtype=torch.long)}


def to_device(obj: Any, device: torch.device | str) -> Any:
    """Nested dicts / lists of tensors moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, Mapping):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_device(v, device) for v in obj]
    return obj


def to_cpu(obj: Any) -> Any:
    """Nested dicts / lists of tensors detached and moved to CPU (for ``torch.save``)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_cpu(v) for v in obj]
    return obj


def load_batches(path: str | os.PathLike, *, pad_token_id: int = 0) -> Any:
    """Batches from disk: a ``torch.save`` file (any nesting of dicts / lists of tensors), or a
    folder written by ``datasets`` ``save_to_disk`` of tokenised rows (a ``DatasetDict`` gives
    ``{split: batch}``, a ``Dataset`` one batch; rows padded with :func:`pad_rows`)."""
    path = Path(path)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)
    if path.is_dir():
        import datasets  # heavy; only this reader needs it

        data = datasets.load_from_disk(str(path))
        if isinstance(data, datasets.DatasetDict):
            return {name: pad_rows(split.to_list(), pad_token_id) for name, split in data.items()}
        return pad_rows(data.to_list(), pad_token_id)
    raise FileNotFoundError(f"no batch file or dataset folder at {path}")
