"""Deprecated alias of :mod:`geffect.distributed` (FSDP2 / DTensor helpers); kept for one release.

Import from :mod:`geffect.distributed` instead; importing this module emits a ``DeprecationWarning``.
"""
from __future__ import annotations

import warnings

from geffect.distributed import (FSDPModule, ShardLayout, all_gather_rows, all_reduce_sum, comm_device, common_group,
                                 is_dtensor, layout, local, rank_in, reshard, true_counts, world_size, wrap_like)

warnings.warn("geffect.shards is deprecated and will be removed in the next release; import its names from "
              "geffect.distributed", DeprecationWarning, stacklevel=2)

__all__ = ["FSDPModule", "ShardLayout", "all_gather_rows", "all_reduce_sum", "comm_device", "common_group", "is_dtensor",
           "layout", "local", "rank_in", "reshard", "true_counts", "world_size", "wrap_like"]
