"""Mask summaries: the kept fraction per parameter group and module type, and the overlap of two masks.

Module types (:func:`module_type`, :func:`module_subtype`) are those of :mod:`geffect.groups`,
re-exported here for mask summaries. Both functions are collective calls for sharded (DTensor)
masks: every element is counted once over all ranks.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from geffect.distributed import true_counts
from geffect.groups import MODULE_SUBTYPES, module_subtype, module_type, parameter_groups
from geffect.masking.application import mask_like

__all__ = ["mask_overlap", "mask_summary", "module_subtype", "module_type"]


def mask_summary(mask: Mapping[str, torch.Tensor],
                 model_or_groups: nn.Module | Mapping[str, Iterable[str]] | None = None):
    """Kept fraction per parameter group and per module type: a pandas DataFrame.

    Columns ``view`` ("all" | "group" | "module_type"), ``name``, ``kept``, ``total``,
    ``fraction``. Groups come from :func:`geffect.groups.parameter_groups` when a model is given
    (or from the mapping given); module types are the fine ones of
    :func:`geffect.groups.module_subtype` (``attn.q``, ..., ``mlp.down``, ``norm``, ``lm_head``),
    structural when a model is given.
    """
    import pandas as pd  # heavy; only the table-returning functions need it

    model = model_or_groups if isinstance(model_or_groups, nn.Module) else None
    kept_per = true_counts(list(mask.values()))  # collective for sharded masks
    counts = {n: (k, int(m.numel())) for (n, m), k in zip(mask.items(), kept_per)}
    rows = []

    def add(view, label, names):
        kept = sum(counts[n][0] for n in names)
        total = sum(counts[n][1] for n in names)
        rows.append({"view": view, "name": label, "kept": kept, "total": total,
                     "fraction": kept / total if total else float("nan")})

    add("all", "all", list(counts))
    if model_or_groups is not None:
        if model is not None:
            groups = parameter_groups(model)
        else:
            groups = model_or_groups
        covered: set[str] = set()
        for g, members in groups.items():
            ns = [n for n in members if n in counts and n not in covered]
            covered.update(ns)
            if ns:
                add("group", g, ns)
        rest = [n for n in counts if n not in covered]
        if rest:
            add("group", "ungrouped", rest)
    by_type: dict[str, list[str]] = {}
    for n in counts:
        by_type.setdefault(module_subtype(n, model), []).append(n)
    for t in MODULE_SUBTYPES:
        if t in by_type:
            add("module_type", t, by_type[t])
    return pd.DataFrame(rows, columns=["view", "name", "kept", "total", "fraction"])


def mask_overlap(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """Jaccard index |a ∧ b| / |a ∨ b| of two masks over the same tensors (1.0 if both empty)."""
    if set(a) != set(b):
        diff = sorted(set(a) ^ set(b))
        raise ValueError(f"masks cover different tensors (e.g. {diff[:3]}); compare masks of one model")
    both, either = [], []
    for n in a:
        if a[n].shape != b[n].shape:
            raise ValueError(f"mask shapes differ for {n!r}: {tuple(a[n].shape)} vs {tuple(b[n].shape)}")
        x, y = a[n].bool(), mask_like(b[n], a[n], n).bool()
        both.append(x & y)
        either.append(x | y)
    counts = true_counts(both + either)  # collective for sharded masks
    inter, union = sum(counts[:len(both)]), sum(counts[len(both):])
    return inter / union if union else 1.0
