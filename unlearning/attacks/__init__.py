"""Attacks on unlearning: does the forgotten knowledge stay forgotten?

- :mod:`unlearning.attacks.quantize`: weight-only post-training quantization (round-to-nearest
  int8 / int4, per output channel or in groups of 128, NF4, FP4) as fake quantization, and the
  size of the unlearning update relative to the quantization step (Zhang et al., ICLR 2025,
  "Catastrophic Failure of LLM Unlearning via Quantization").

See docs/attacks.md.
"""
from unlearning.attacks.quantize import (
    DEFAULT_SCHEMES,
    FP4_VALUES,
    NF4_VALUES,
    QuantizedModel,
    QuantizedWeight,
    QuantScheme,
    get_scheme,
    quantizable_modules,
    quantize_model,
    quantize_weight,
    update_size,
)

__all__ = [
    "DEFAULT_SCHEMES",
    "FP4_VALUES",
    "NF4_VALUES",
    "QuantScheme",
    "QuantizedModel",
    "QuantizedWeight",
    "get_scheme",
    "quantizable_modules",
    "quantize_model",
    "quantize_weight",
    "update_size",
]
