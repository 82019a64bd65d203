"""Mask storage: one safetensors file per mask, written atomically, readable at any world size.

A mask ``{parameter name: bool tensor}`` (True = the weight is *updated*) is stored as uint8
tensors under the parameter names, with metadata recording the format (:data:`MASK_FORMAT`),
the kept and total counts and whatever the writer adds (the attribution settings). The file is
a plain safetensors file (``safetensors.torch.load_file`` reads it).

Sharded masks (FSDP2 DTensors, see :mod:`geffect.distributed`) are written full-shaped by a
collective :func:`save_mask`, and :func:`load_mask` with ``model=`` reads only this rank's rows,
so a file written at one world size loads at any other.
"""
from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from geffect.distributed import (all_reduce_sum, comm_device, common_group, is_dtensor, layout, local, rank_in,
                                 reshard, true_counts, wrap_like)
from geffect.io import atomic_path, dumps
from geffect.masking.selection import Mask

logger = logging.getLogger(__name__)

__all__ = ["MASK_FORMAT", "check_mask", "load_mask", "mask_metadata", "save_mask"]

MASK_FORMAT = "geffect-weight-mask"


def save_mask(mask: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
              metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a mask to safetensors atomically (bool stored as uint8; metadata records the format).

    ``metadata`` values that are not strings are stored as JSON (:func:`geffect.io.dumps`).

    Sharded masks (DTensors, from scores of an FSDP2 model) are written full-shaped: a
    **collective call** (every rank calls it with its shards); each tensor is gathered in turn
    and rank 0 streams it to the file, so no rank holds more than one full tensor at a time.
    The file is the same as a single-process one and loads at any world size
    (:func:`load_mask` with ``model=``). Every rank returns once the file is in place.
    """
    path = Path(path)
    if not mask:
        raise ValueError("refusing to save an empty mask")
    names = list(mask)
    for n in names:
        if mask[n].dtype != torch.bool:
            raise ValueError(f"mask[{n!r}] has dtype {mask[n].dtype}; masks are bool tensors")
    group = common_group(mask.values())
    kept = sum(true_counts([mask[n] for n in names]))
    total = sum(int(mask[n].numel()) for n in names)
    meta = {"format": MASK_FORMAT, "version": "1", "dtype": "bool",
            "kept": str(kept), "total": str(total)}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else dumps(value)
    shapes = [tuple(int(d) for d in mask[n].shape) for n in names]
    gathered = (_full_uint8(mask[n]) for n in names)  # collective per sharded tensor
    if group is None:
        with atomic_path(path) as tmp:
            _write_safetensors(tmp, names, shapes, meta, gathered)
        return path
    failed: BaseException | None = None
    if rank_in(group) == 0:
        try:
            with atomic_path(path) as tmp:
                _write_safetensors(tmp, names, shapes, meta, gathered)
        except Exception as err:  # noqa: BLE001 - re-raised below, after the other ranks are released
            failed = err
    for _ in gathered:  # other ranks (and rank 0 after a failed write) still take part in every gather
        pass
    status = torch.tensor([0 if failed is None else 1], dtype=torch.int64,
                          device=comm_device(group, mask[names[0]]))
    if int(all_reduce_sum(status, group)):
        if failed is not None:
            raise failed
        raise RuntimeError(f"rank 0 failed to write the mask file {path}; see its error")
    return path


def _full_uint8(m: torch.Tensor) -> torch.Tensor:
    """The full mask as a contiguous CPU uint8 tensor (all-gathered when sharded)."""
    if is_dtensor(m):
        m = m.to(torch.uint8).full_tensor()
    return m.detach().to("cpu", torch.uint8).contiguous()


def _write_safetensors(path: Path, names: list[str], shapes: list[tuple[int, ...]], metadata: Mapping[str, str],
                       tensors: Iterable[torch.Tensor]) -> None:
    """Stream uint8 tensors into a safetensors file (8-byte little-endian header length, JSON
    header with dtype/shape/byte offsets, then the raw bytes in header order), one at a time."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for n, shape in zip(names, shapes):
        size = math.prod(shape)
        header[n] = {"dtype": "U8", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)))
        fh.write(raw)
        for n, shape, t in zip(names, shapes, tensors):
            if tuple(t.shape) != shape:
                raise ValueError(f"mask[{n!r}] gathered with shape {tuple(t.shape)}, expected {shape}")
            fh.write(t.numpy().tobytes())


def load_mask(path: str | os.PathLike, *, device: str | torch.device = "cpu", model: nn.Module | None = None) -> Mask:
    """Read a mask written by :func:`save_mask`; returns ``{name: bool tensor}``.

    With ``model`` given, the tensor of every parameter that is a DTensor (FSDP2) is returned
    sharded like that parameter, on its device, and only this rank's rows are read from the
    file; the file may have been written at any world size (the model's FSDP2 modules are
    resharded first, :func:`geffect.distributed.reshard`). Other tensors are full, on ``device``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no mask file at {path}; create one with `python -m unlearning.attribute --output {path} ...`"
        )
    if model is not None:
        reshard(model)
    params = dict(model.named_parameters()) if model is not None else {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
        if meta.get("format") != MASK_FORMAT:
            raise ValueError(f"{path} is not a geffect weight mask (metadata format={meta.get('format')!r})")
        out = {}
        for n in f.keys():
            view = f.get_slice(n)
            if view.get_dtype() not in ("U8", "BOOL"):
                raise ValueError(f"{path}: tensor {n!r} has dtype {view.get_dtype()}, expected uint8")
            p = params.get(n)
            if p is not None and is_dtensor(p):
                shape = tuple(view.get_shape())
                if shape != tuple(p.shape):
                    raise ValueError(f"{path}: mask[{n!r}] has shape {shape}, parameter has {tuple(p.shape)}; "
                                     "was the mask computed for a different model?")
                lay = layout(p)
                if not lay.sharded:
                    t = view[:]
                elif lay.stop > lay.start:
                    t = view[lay.start:lay.stop]
                else:  # a trailing rank without rows
                    t = torch.empty((0, *shape[1:]), dtype=torch.uint8)
                out[n] = wrap_like(t.to(device=local(p).device, dtype=torch.bool), p)
            else:
                out[n] = f.get_tensor(n).to(device=device, dtype=torch.bool)
    return out


def mask_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata stored with a mask file (format, kept, total and whatever the writer added)."""
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return dict(f.metadata() or {})


def check_mask(mask: Mapping[str, torch.Tensor], model: nn.Module, *, strict: bool = False) -> list[str]:
    """Check mask names and shapes against ``model``; returns trainable names the mask omits.

    Raises ``ValueError`` naming unknown parameters and shape mismatches. With ``strict``,
    a trainable parameter missing from the mask is an error too (otherwise it is reported and
    stays fully trainable).
    """
    params = dict(model.named_parameters())
    unknown = [n for n in mask if n not in params]
    bad_shape = [f"{n}: mask {tuple(mask[n].shape)} vs parameter {tuple(params[n].shape)}"
                 for n in mask if n in params and mask[n].shape != params[n].shape]
    problems = []
    if unknown:
        problems.append(f"{len(unknown)} names not in the model (e.g. {unknown[:3]})")
    if bad_shape:
        problems.append(f"{len(bad_shape)} shape mismatches ({'; '.join(bad_shape[:3])})")
    missing = [n for n, p in params.items() if p.requires_grad and n not in mask]
    if strict and missing:
        problems.append(f"{len(missing)} trainable parameters not covered (e.g. {missing[:3]})")
    if problems:
        raise ValueError("mask does not match the model: " + "; ".join(problems)
                         + ". Was the mask computed for a different model or architecture?")
    if missing:
        logger.info("%d trainable parameters are not in the mask and stay fully trainable", len(missing))
    return missing

