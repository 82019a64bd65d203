"""Helpers for tensors sharded by FSDP2 (``torch.distributed.fsdp.fully_shard``): DTensors.

FSDP2 stores every parameter it manages as a ``torch.distributed.tensor.DTensor`` on a 1-D
device mesh with placement ``Shard(0)``: mesh coordinate r holds rows ``[r·c, min((r+1)·c, n))``
of the full tensor, ``c = ceil(n / world)`` (``torch.chunk`` on dim 0; trailing ranks may hold
fewer rows or none). The full tensor's row-major flat order is therefore the concatenation of
the local flat orders in coordinate order, which is what lets a sharded top-k break ties
exactly like the single-process one (:mod:`geffect.masking`).

A plain tensor next to DTensors in a collective computation is treated as **replicated**:
every rank holds the same values, coordinate 0 counts them. ``Replicate()`` DTensors are
treated the same way. Any other layout (2-D meshes as in HSDP, ``Shard(d)`` with d > 0,
tensor-parallel strided shards) raises a ``ValueError``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

try:
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # pragma: no cover - builds without torch.distributed
    dist = None
    DTensor = Replicate = Shard = None
    FSDPModule = ()

__all__ = ["FSDPModule", "ShardLayout", "all_gather_rows", "all_reduce_sum", "comm_device", "common_group", "is_dtensor", "layout",
           "local", "rank_in", "reshard", "true_counts", "world_size", "wrap_like"]


def is_dtensor(t: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (an FSDP2-sharded parameter, its grad, ...)."""
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's values: ``t.to_local()`` for a DTensor, ``t`` itself otherwise."""
    return t.to_local() if is_dtensor(t) else t


@dataclass(frozen=True)
class ShardLayout:
    """Where this rank's local values sit in the full tensor.

    ``sharded``: rows ``[start, stop)`` of dim 0 are local (``Shard(0)``); otherwise the whole
    tensor is local on every rank (replicated) and only coordinate ``owner`` counts it.
    """

    sharded: bool
    start: int
    stop: int
    group: Any = None
    coordinate: int = 0
    world: int = 1
    owner: int = 0

    @property
    def counts_here(self) -> bool:
        """Whether this rank's values enter global counts (every shard; a replica on its owner only)."""
        return self.sharded or self.coordinate == self.owner


def layout(t: torch.Tensor, group: Any = None) -> ShardLayout:
    """The :class:`ShardLayout` of ``t``; ``group`` is the process group of a collective
    computation that plain (replicated) tensors take part in (None: not distributed)."""
    if not is_dtensor(t):
        n = int(t.shape[0]) if t.dim() else 1
        return ShardLayout(False, 0, n, group, rank_in(group), world_size(group))
    mesh = t.device_mesh
    if mesh.ndim != 1:
        raise ValueError(
            f"DTensor on a {mesh.ndim}-D device mesh (placements {t.placements}); only 1-D meshes "
            "(fully_shard over one process group) are supported"
        )
    (placement,) = t.placements
    grp = mesh.get_group()
    coordinate = mesh.get_local_rank()
    world = mesh.size()
    if dist.get_rank(grp) != coordinate:
        raise ValueError("the device mesh's coordinates do not follow the process group's rank order")
    n = int(t.shape[0]) if t.dim() else 1
    if isinstance(placement, Replicate):
        return ShardLayout(False, 0, n, grp, coordinate, world)
    if type(placement) is not Shard or placement.dim != 0 or t.dim() == 0:
        raise ValueError(
            f"unsupported DTensor placement {placement!r}: only Shard(0) (fully_shard's default) and "
            "Replicate() are supported"
        )
    chunk = -(-n // world)  # ceil: torch.chunk's chunk size
    start, stop = min(coordinate * chunk, n), min((coordinate + 1) * chunk, n)
    got = int(t.to_local().shape[0])
    if got != stop - start:
        raise ValueError(
            f"DTensor with Shard(0) holds {got} local rows on coordinate {coordinate}, expected {stop - start} "
            "(torch.chunk layout); uneven custom shardings are not supported"
        )
    return ShardLayout(True, start, stop, grp, coordinate, world)


def reshard(model: torch.nn.Module) -> list:
    """Reshard every FSDP2 module of ``model`` (``FSDPModule.reshard()``) and return them.

    After a forward without backward FSDP2 leaves the root's parameters unsharded (plain
    tensors registered on the modules); resharding makes every managed parameter its sharded
    DTensor again, which the sharded code paths rely on. A no-op for other models.
    """
    modules = [m for m in model.modules() if isinstance(m, FSDPModule)] if FSDPModule else []
    for m in modules:
        m.reshard()
    return modules


def common_group(tensors: Iterable[torch.Tensor]) -> Any:
    """The process group shared by the DTensors among ``tensors`` (None if there is none).

    Raises ``ValueError`` when DTensors live on different meshes.
    """
    group = mesh = None
    for t in tensors:
        if not is_dtensor(t):
            continue
        if mesh is None:
            mesh = t.device_mesh
            if mesh.ndim != 1:
                raise ValueError(f"only 1-D device meshes are supported, got a {mesh.ndim}-D mesh")
            group = mesh.get_group()
        elif t.device_mesh != mesh:
            raise ValueError("the sharded tensors live on different device meshes; use one mesh for all")
    return group


def rank_in(group: Any) -> int:
    return dist.get_rank(group) if group is not None else 0


def world_size(group: Any) -> int:
    return dist.get_world_size(group) if group is not None else 1


def wrap_like(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values`` (this rank's part, shaped like ``local(like)``) as a tensor laid out like ``like``."""
    if not is_dtensor(like):
        return values
    return DTensor.from_local(values, like.device_mesh, like.placements, run_check=False,
                              shape=like.shape, stride=_contiguous_stride(like.shape))


def _contiguous_stride(shape: torch.Size) -> tuple[int, ...]:
    stride, acc = [], 1
    for s in reversed(shape):
        stride.append(acc)
        acc *= max(int(s), 1)
    return tuple(reversed(stride))


def all_reduce_sum(t: torch.Tensor, group: Any) -> torch.Tensor:
    """In-place sum over ``group`` (no-op without one)."""
    if group is not None:
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def all_gather_rows(t: torch.Tensor, group: Any) -> torch.Tensor:
    """Stack ``t`` (same shape on every rank) over ``group``: (world, *t.shape)."""
    if group is None:
        return t.unsqueeze(0)
    out = [torch.empty_like(t) for _ in range(world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return torch.stack(out)


def true_counts(masks: Sequence[torch.Tensor]) -> list[int]:
    """Number of True entries of each (possibly sharded) bool mask, each element counted once
    over all ranks (one all-reduce for the whole list when any mask is a DTensor)."""
    group = common_group(masks)
    values = [int(local(m).sum()) if layout(m, group).counts_here else 0 for m in masks]
    if group is None or not masks:
        return values
    t = torch.tensor(values, dtype=torch.int64, device=comm_device(group, masks[0]))
    return [int(v) for v in all_reduce_sum(t, group).cpu()]


def comm_device(group: Any, like: torch.Tensor) -> torch.device:
    """Device for small collective buffers: CUDA for NCCL groups, else CPU."""
    if group is not None and dist.get_backend(group) == "nccl":
        return local(like).device if local(like).is_cuda else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
