"""Deprecated path: probe sets are built by :func:`unlearning.data.probe_batches` (:mod:`unlearning.data.probes`).

Kept for one release; importing this module emits a ``DeprecationWarning``.
"""
import warnings

from unlearning.data.probes import probe_batches, tokenised_batch  # noqa: F401

__all__ = ["probe_batches", "tokenised_batch"]

warnings.warn("unlearning.probes moved to unlearning.data (probe_batches, tokenised_batch); import them from there "
              "(the old path goes in the next release)", DeprecationWarning, stacklevel=2)
