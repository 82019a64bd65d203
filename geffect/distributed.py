"""Process-group helpers for G-effects computed by several processes at once.

Under data parallelism (DDP) every process holds the full, all-reduced gradient, so the probe
instances of a G-effect can be split across processes: rank r computes the rows of instances
r, r + W, r + 2W, ... (W = world size) with the full direction, and the rows are gathered on
rank 0, which writes them. Each process then does ~1/W of the tracking work.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) parameters and gradients are ``DTensor``
shards; :mod:`geffect.engine` gathers a layer's direction only while that layer's
contribution is computed (see :func:`full_tensor`), so no rank ever holds the full gradient.

Every function here is a collective when a process group with more than one rank is
initialised: all ranks must call it, in the same order. With no process group (or one rank)
they are plain single-process operations.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["broadcast_object", "fsdp_modules", "full_tensor", "gathered_parameters", "gather_objects", "gather_rows",
           "is_distributed", "is_dtensor", "is_sharded", "local_tensor", "max_over_ranks", "rank_world", "reshard",
           "shard_positions", "sum_across_ranks"]


def is_distributed() -> bool:
    """A process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def shard_positions(n: int, rank: int, world: int) -> list[int]:
    """The instances rank ``rank`` of ``world`` computes: ``rank, rank + world, ...`` below ``n``."""
    return list(range(rank, n, world))


def is_dtensor(t: Any) -> bool:
    """``t`` is a ``torch.distributed.tensor.DTensor`` (FSDP2 parameters and gradients)."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # pragma: no cover - torch without distributed
        return False
    return isinstance(t, DTensor)


def is_sharded(model: nn.Module) -> bool:
    """The model's parameters are DTensors (FSDP2 ``fully_shard``): its forward is a collective."""
    return any(is_dtensor(p) for p in model.parameters())


def fsdp_modules(model: nn.Module) -> list[nn.Module]:
    """The FSDP2 modules of ``model`` (those ``fully_shard`` was applied to), root first."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without FSDP2
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def reshard(model: nn.Module) -> None:
    """Free the gathered parameters of every FSDP2 module (no-op for other models).

    FSDP2 reshards the root module only after a backward; a forward under ``torch.no_grad``
    (weights of an objective, evaluation) leaves the root's parameters gathered, and the next
    forward would reuse them after ``optimizer.step()`` has changed the shards. Call this after
    such forwards.
    """
    for module in fsdp_modules(model):
        module.reshard()


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


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: ``DTensor.full_tensor()`` (an all-gather: a collective), else ``t``."""
    return t.full_tensor() if is_dtensor(t) else t


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (``to_local()``), else ``t``."""
    return t.to_local() if is_dtensor(t) else t


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


def gather_rows(local: torch.Tensor, n: int, *, positions: Sequence[int] | None = None) -> torch.Tensor | None:
    """Assemble an (n, G) matrix on rank 0 from the (n_r, G) rows each rank computed.

    ``positions``: the rows this rank holds (default :func:`shard_positions`). Without
    ``positions`` on every rank the rows are concatenated in rank order (each rank computed its
    own instances). Returns the full matrix (CPU) on rank 0 and None elsewhere. Collective.
    """
    rank, world = rank_world()
    local = local.detach().cpu()
    if world == 1:
        return local
    parts = gather_objects((None if positions is None else list(positions), local))
    if rank != 0:
        return None
    if all(p is None for p, _ in parts):
        return torch.cat([m for _, m in parts])
    out = torch.empty(n, local.shape[1], dtype=local.dtype)
    seen = 0
    for pos, m in parts:
        out[torch.tensor(pos, dtype=torch.long)] = m
        seen += len(pos)
    if seen != n:
        raise RuntimeError(f"gathered {seen} rows for a matrix of {n}; every rank must pass its positions")
    return out


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
