"""Several processes at once: process-group helpers and FSDP2 (DTensor) layouts, in one place.

**Data parallelism (DDP).** Every process holds the full, all-reduced gradient, so the probe
instances of a G-effect can be split across processes: rank r computes the rows of instances
r, r + W, r + 2W, ... (W = world size, :func:`shard_positions`) with the full direction, and
the rows are gathered on rank 0 (:func:`gather_objects`), which writes them. Each process then
does ~1/W of the tracking work.

**FSDP2** (``torch.distributed.fsdp.fully_shard``). Parameters and gradients are
``torch.distributed.tensor.DTensor`` shards on a 1-D device mesh with placement ``Shard(0)``:
mesh coordinate r holds rows ``[r·c, min((r+1)·c, n))`` of the full tensor,
``c = ceil(n / world)`` (``torch.chunk`` on dim 0; trailing ranks may hold fewer rows or none),
see :class:`ShardLayout`. The full tensor's row-major flat order is therefore the concatenation
of the local flat orders in coordinate order, which is what lets a sharded top-k break ties
exactly like the single-process one (:mod:`geffect.masking.selection`). :mod:`geffect.engine`
gathers a layer's direction only while that layer's contribution is computed
(:func:`full_tensor`), so no rank ever holds the full gradient.

A plain tensor next to DTensors in a collective computation is treated as **replicated**:
every rank holds the same values, coordinate 0 counts them. ``Replicate()`` DTensors are
treated the same way. Any other layout (2-D meshes as in HSDP, ``Shard(d)`` with d > 0,
tensor-parallel strided shards) raises a ``ValueError``.

Two conventions for the process group, one per half of the module: the DDP helpers
(:func:`rank_world`, :func:`gather_objects`, :func:`sum_across_ranks`, ...) use the default
group; the DTensor helpers take the ``group`` of the DTensors involved (:func:`common_group`),
where ``None`` means "not distributed" (:func:`rank_in` 0, :func:`world_size` 1).

Every collective function is a collective only when a process group with more than one rank
takes part: all ranks must call it, in the same order. With no process group (or one rank)
they are plain single-process operations.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

try:
    import torch.distributed as dist
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # pragma: no cover - builds without torch.distributed
    dist = None
    DTensor = Replicate = Shard = None
    FSDPModule = ()

__all__ = ["FSDPModule", "ShardLayout", "all_gather_rows", "all_reduce_sum", "broadcast_object", "comm_device",
           "common_group", "fsdp_modules", "full_tensor", "gather_objects", "gathered_parameters", "is_distributed",
           "is_dtensor", "is_sharded", "layout", "local", "max_over_ranks", "rank_in", "rank_world", "reshard",
           "shard_positions", "sum_across_ranks", "true_counts", "world_size", "wrap_like"]


# --------------------------------------------------------------------------- processes (default group)
def is_distributed() -> bool:
    """A process group with more than one rank is initialised."""
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_world() -> tuple[int, int]:
    """(rank, world size) in the default group; (0, 1) without a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def shard_positions(n: int, rank: int, world: int) -> list[int]:
    """The instances rank ``rank`` of ``world`` computes: ``rank, rank + world, ...`` below ``n``."""
    return list(range(rank, n, world))


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` on rank 0 (rank order); None on the other ranks. Collective."""
    rank, world = rank_world()
    if world == 1:
        return [obj]
    out: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def max_over_ranks(value: int) -> int:
    """The largest ``value`` held by any rank, on every rank. Collective (a no-op in one process)."""
    if not is_distributed():
        return value
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, int(value))
    return max(values)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank. Collective."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_across_ranks(tensors: Mapping[str, torch.Tensor] | Iterable[torch.Tensor]) -> None:
    """In-place sum over ranks of plain (replicated-layout) tensors, one flat all-reduce per dtype/device.

    DTensors are skipped: their shards are already combined by the DTensor ops that built them.
    """
    if not is_distributed():
        return
    values = list(tensors.values()) if isinstance(tensors, Mapping) else list(tensors)
    buckets: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for t in values:
        if not is_dtensor(t):
            buckets.setdefault((t.dtype, t.device), []).append(t)
    for group in buckets.values():
        flat = torch.cat([t.reshape(-1) for t in group])  # (sum of numel,)
        dist.all_reduce(flat)
        offset = 0
        for t in group:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()


# --------------------------------------------------------------------------- FSDP2 modules
def is_dtensor(t: Any) -> bool:
    """``t`` is a ``torch.distributed.tensor.DTensor`` (an FSDP2-sharded parameter, its grad, ...)."""
    return DTensor is not None and isinstance(t, DTensor)


def is_sharded(model: nn.Module) -> bool:
    """The model's parameters are DTensors (FSDP2 ``fully_shard``): its forward is a collective."""
    return any(is_dtensor(p) for p in model.parameters())


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The FSDP2 modules of ``model`` (those ``fully_shard`` was applied to), root first."""
    if not FSDPModule:  # pragma: no cover - torch without FSDP2
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def reshard(model: nn.Module) -> list[nn.Module]:
    """Free the gathered parameters of every FSDP2 module (``FSDPModule.reshard()``); returns them.

    FSDP2 reshards the root module only after a backward; a forward under ``torch.no_grad``
    (weights of an objective, evaluation) leaves the root's parameters gathered: plain tensors
    registered on the modules, which the next forward would reuse after ``optimizer.step()``
    has changed the shards. Resharding makes every managed parameter its sharded DTensor again,
    which the sharded code paths rely on. Call this after such forwards. A no-op (returning
    ``[]``) for a model that is not FSDP2-sharded.
    """
    modules = fsdp_modules(model)
    for module in modules:
        module.reshard()
    return modules


@contextlib.contextmanager
def gathered_parameters(model: nn.Module) -> Iterator[None]:
    """Keep every FSDP2 module's parameters gathered for the block, so that forwards are local.

    Inside, each rank may run any number of forwards (e.g. generation on its own share of an
    evaluation set) with no collective; the price is the full parameters on every rank while
    the block runs. Entering and leaving are collectives. The modules' reshard-after-forward
    settings are restored on exit. A no-op for a model that is not FSDP2-sharded.
    """
    modules = fsdp_modules(model)
    if not modules:
        yield
        return
    states = [m._get_fsdp_state() for m in modules]
    saved = [(st, st._auto_reshard_after_forward, [(g, g.post_forward_mesh_info) for g in st._fsdp_param_groups])
             for st in states]
    try:
        for m in modules:
            m.set_reshard_after_forward(False, recurse=False)
            m.unshard()
        yield
    finally:
        for m in modules:
            m.reshard()
        for st, auto, groups in saved:
            st._auto_reshard_after_forward = auto
            for g, info in groups:
                g.post_forward_mesh_info = info


# --------------------------------------------------------------------------- DTensor layouts
def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's values: ``t.to_local()`` for a DTensor, ``t`` itself otherwise."""
    return t.to_local() if is_dtensor(t) else t


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``DTensor.full_tensor()`` (an all-gather: a collective), else ``t``."""
    return t.full_tensor() if is_dtensor(t) else t


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
    n = int(t.shape[0]) if t.dim() else 1
    if not is_dtensor(t):
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


def local_rows(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The rows of a full-shaped tensor that this rank holds of ``like`` (all of them if not sharded)."""
    if not is_dtensor(like):
        return full
    lay = layout(like)
    return full[lay.start:lay.stop] if lay.sharded else full


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
    """This process's rank in ``group`` (0 for ``None``: not distributed)."""
    return dist.get_rank(group) if group is not None else 0


def world_size(group: Any) -> int:
    """The number of ranks of ``group`` (1 for ``None``: not distributed)."""
    return dist.get_world_size(group) if group is not None else 1


def comm_device(group: Any, like: torch.Tensor) -> torch.device:
    """Device for small collective buffers: CUDA for NCCL groups, else CPU."""
    if group is not None and dist.get_backend(group) == "nccl":
        return local(like).device if local(like).is_cuda else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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
