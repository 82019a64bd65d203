"""Weight-only post-training quantization of a causal LM, as an attack on unlearning.

Zhang et al. (ICLR 2025, "Catastrophic Failure of LLM Unlearning via Quantization") show that
quantizing an unlearned model can give back what unlearning removed: when the unlearning update
of a weight is small against the quantization step, the target and the unlearned weight round
to the same code, so the quantized unlearned model *is* the quantized target model. Their code
quantizes with bitsandbytes through ``transformers`` (``BitsAndBytesConfig(load_in_8bit=True)``:
LLM.int8's row-wise absmax int8 weights; ``load_in_4bit=True``: bitsandbytes' default 4-bit
type, FP4, in blocks of 64), and their paper adds GPTQ and AWQ at 4 bits.

This module is *fake* quantization: :func:`quantize_model` returns a model whose weights are the
de-quantized values ``Q(W)`` in the model's own dtype, so every metric and G-effect code runs on
it unchanged. Schemes (:class:`QuantScheme`, by name with :func:`get_scheme`):

- ``int8`` / ``int4``: round-to-nearest (RTN) integer codes, one scale per output channel (a
  row of the weight); ``-g128``: one scale per group of 128 consecutive weights along the input
  dimension (GPTQ's and AWQ's group size); ``-asym``: with an integer zero point.

  * symmetric (the default, LLM.int8's weight format; GPTQ's default is symmetric too):
    ``s = absmax / q_max`` with ``q_max = 2^(b-1) - 1`` (127, 7), codes
    ``q = round(w / s)`` in ``[-q_max, q_max]`` (0 is exact, ±absmax up to the float32 rounding
    of ``s``), ``Q(w) = q·s``.
  * asymmetric (``-asym``, GPTQ's and torchao's convention, with the range stretched to hold
    0): ``lo = min(min w, 0)``, ``hi = max(max w, 0)``, ``s = (hi - lo) / (2^b - 1)``,
    ``z = clamp(-round(lo / s), 0, 2^b - 1)``, ``q = clamp(round(w / s) + z, 0, 2^b - 1)``,
    ``Q(w) = (q - z)·s``.
- ``nf4``: QLoRA's 4-bit NormalFloat (Dettmers et al., 2023): blocks of 64 weights along the
  input dimension, ``x = w / absmax``, ``q`` = the index of the nearest of the 16 NF4 values
  (the table bitsandbytes defines, :data:`NF4_VALUES`; a tie goes to the lower value, as in
  bitsandbytes), ``Q(w) = NF4[q]·absmax``. No double quantization of the absmax (the
  ``transformers`` default, ``bnb_4bit_use_double_quant=False``).
- ``fp4``: bitsandbytes' FP4 table (:data:`FP4_VALUES`, e2m1 with the values divided by 12),
  the 4-bit type of ``load_in_4bit=True``; blocks of 64 like ``nf4``.

Rounding is round-half-to-even (``torch.round``) on the float64 quotient ``w / s`` with ``s`` the
float32 scale, i.e. the exact quotient; libraries that multiply by a float32 reciprocal can
round a quotient lying within an ulp of ``k + 1/2`` the other way (docs/attacks.md measures
how often). Scales are float32 (as every library stores them), computed in float32 from the
weights' extreme values; an all-zero group gets codes 0 and scale 0.

Which weights (``lm_head``/``embeddings`` switches): by default every ``nn.Linear`` (and
``transformers``' ``Conv1D``, GPT-2's linear layer) inside the decoder blocks; the LM head and
the embeddings stay in full precision, as ``transformers`` keeps them for bitsandbytes
(``get_keys_to_not_convert``), GPTQ and AWQ, and so as in Zhang et al.'s runs. With
``lm_head=True`` the output projection is quantized too (row = vocabulary entry); with
``embeddings=True`` every ``nn.Embedding`` outside the blocks (row = token). A weight tied
between the embedding and the LM head is one tensor: quantizing either changes both.

The **update size relative to the quantization step** (:func:`update_size`) is the quantity
Zhang et al. tie to recovery: per quantized module and per parameter group, the size of
``θ_unlearned − θ_target``, the mean quantization step, their ratio, and the fraction of weights
whose code differs between ``Q(θ_target)`` and ``Q(θ_unlearned)``.

Example::

    from unlearning.attacks import quantize_model, update_size
    quantized = quantize_model(model, "int4-g128")       # a copy; quantized.stats per module
    table = update_size(target, unlearned, "int4-g128")  # tidy frame: module / group / model rows
"""
from __future__ import annotations

import copy
import logging
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from geffect.groups import find_block_list, module_subtype, parameter_groups

if TYPE_CHECKING:  # pandas is imported on use
    import pandas as pd

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

logger = logging.getLogger(__name__)

# The 16 NF4 values exactly as bitsandbytes defines them (bitsandbytes.functional.get_4bit_type("nf4"),
# float32): quantiles of N(0, 1) scaled to [-1, 1] with an exact zero (QLoRA, Dettmers et al. 2023, Sec. 3).
NF4_VALUES: tuple[float, ...] = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)
# bitsandbytes' FP4 (1 sign, 2 exponent, 1 mantissa bit), in its bit-pattern order, before the division
# by the largest magnitude (12): index 0b0xyz is +value, 0b1xyz is -value (index 8 is -0).
_FP4_RAW: tuple[float, ...] = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0,
                               -0.0, -0.0625, -8.0, -12.0, -4.0, -6.0, -2.0, -3.0)
FP4_VALUES: tuple[float, ...] = tuple(
    (torch.tensor(_FP4_RAW, dtype=torch.float32) / 12.0).tolist())  # float32 division, as bitsandbytes does

_NAME_RE = re.compile(r"^(?:int(?P<bits>\d+)|(?P<codebook>nf4|fp4))(?:-g(?P<group>\d+))?(?P<sym>-asym|-sym)?$")

DEFAULT_SCHEMES = ("int8", "int8-g128", "int4", "int4-g128", "int4-g128-asym", "nf4", "fp4")


@dataclass(frozen=True)
class QuantScheme:
    """One weight-only quantization scheme (see the module docstring for the formulas).

    Attributes:
        kind: ``"int"`` (round-to-nearest integer codes), ``"nf4"`` or ``"fp4"`` (16-value tables
            with an absmax scale per block).
        bits: 8 or 4 (``nf4``/``fp4``: 4).
        group_size: weights per scale along the input dimension; ``None``: one scale per output
            channel (the whole row). ``nf4``/``fp4`` need a block size (64 by default).
        symmetric: ``kind="int"`` only: absmax scale with no zero point (default), else an
            integer zero point.
    """

    kind: str = "int"
    bits: int = 8
    group_size: int | None = None
    symmetric: bool = True

    def __post_init__(self) -> None:
        if self.kind not in ("int", "nf4", "fp4"):
            raise ValueError(f"unknown quantization kind {self.kind!r}; use 'int', 'nf4' or 'fp4'")
        if self.bits not in (4, 8):
            raise ValueError(f"bits={self.bits} is not supported; use 8 or 4 (int8, int4, nf4, fp4)")
        if self.kind != "int":
            if self.bits != 4:
                raise ValueError(f"{self.kind} is a 4-bit format; got bits={self.bits}")
            if self.group_size is None:
                raise ValueError(f"{self.kind} needs a block size (group_size); bitsandbytes and QLoRA use 64")
            if not self.symmetric:
                raise ValueError(f"{self.kind} has no zero point (absmax scaling); drop symmetric=False")
        if self.group_size is not None and (not isinstance(self.group_size, int) or self.group_size < 1):
            raise ValueError(f"group_size must be a positive integer or None (per output channel), "
                             f"got {self.group_size!r}")

    @property
    def name(self) -> str:
        """The canonical name, e.g. ``int4-g128``, ``int8-asym``, ``nf4`` (``-g`` only when not 64)."""
        if self.kind != "int":
            return self.kind + ("" if self.group_size == 64 else f"-g{self.group_size}")
        return f"int{self.bits}" + (f"-g{self.group_size}" if self.group_size else "") + (
            "" if self.symmetric else "-asym")

    @property
    def levels(self) -> int:
        """Number of distinct representable values per group (``fp4``: 15, its two zeros count once)."""
        if self.kind == "int":
            return 2 ** self.bits - 1 if self.symmetric else 2 ** self.bits
        return 15 if self.kind == "fp4" else 16

    def __str__(self) -> str:
        return self.name


def get_scheme(scheme: str | QuantScheme) -> QuantScheme:
    """A :class:`QuantScheme` from a name: ``int8``, ``int4``, ``int4-g128``, ``int8-g128-asym``,
    ``nf4``, ``fp4`` (block 64), ``nf4-g32``, ...; a :class:`QuantScheme` passes through."""
    if isinstance(scheme, QuantScheme):
        return scheme
    m = _NAME_RE.match(str(scheme).strip().lower())
    if m is None:
        raise ValueError(
            f"unknown quantization scheme {scheme!r}; use int8 / int4 (per output channel), int8-g128 / "
            f"int4-g128 (groups of 128 along the input dimension), an -asym suffix for a zero point, "
            f"or nf4 / fp4 (blocks of 64); e.g. {', '.join(DEFAULT_SCHEMES)}")
    group = int(m["group"]) if m["group"] else None
    if m["codebook"]:
        if m["sym"]:
            raise ValueError(f"{scheme!r}: {m['codebook']} uses absmax scaling; drop the {m['sym']} suffix")
        return QuantScheme(kind=m["codebook"], bits=4, group_size=group or 64)
    return QuantScheme(kind="int", bits=int(m["bits"]), group_size=group, symmetric=m["sym"] != "-asym")


# --------------------------------------------------------------------------- one weight matrix
@dataclass
class QuantizedWeight:
    """One quantized weight matrix (rows = output channels, R × C), groups of ``g`` along C.

    Attributes:
        codes: (R, C) int16: RTN codes (symmetric: in [-q_max, q_max]; asymmetric: in
            [0, 2^b - 1]) or the 4-bit table index (0..15).
        scale: (R, C/g) float32: the RTN scale, or the block absmax for ``nf4``/``fp4``.
        zero_point: (R, C/g) int16 for asymmetric RTN, else None.
        step: (R, C/g) float64: the mean distance between adjacent representable values of the
            group (RTN: ``scale``; ``nf4``/``fp4``: ``absmax · (range of the table) / (levels - 1)``,
            i.e. ``absmax · 2/15`` and ``absmax · 2/14``; their steps are non-uniform).
        dequantized: (R, C) the de-quantized weight ``Q(W)``, in the weight's dtype.
    """

    codes: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor | None
    step: torch.Tensor
    dequantized: torch.Tensor

    def expand(self, t: torch.Tensor) -> torch.Tensor:
        """A per-group (R, C/g) tensor repeated to the weight's shape (R, C)."""
        g = self.codes.shape[1] // t.shape[1]
        return t.repeat_interleave(g, dim=1)  # (R, C)


def _table(kind: str, device: torch.device) -> torch.Tensor:
    values = NF4_VALUES if kind == "nf4" else FP4_VALUES
    return torch.tensor(values, dtype=torch.float32, device=device).double()  # float32 values, exact in float64


def _check_groups(weight: torch.Tensor, scheme: QuantScheme, what: str) -> int:
    if weight.dim() != 2:
        raise ValueError(f"{what}: expected a 2-D weight (out_features, in_features), got shape "
                         f"{tuple(weight.shape)}")
    cols = weight.shape[1]
    g = scheme.group_size or cols
    if cols % g:
        divisors = [d for d in (256, 128, 64, 32, 16) if cols % d == 0]
        hint = f"group sizes that divide it: {divisors}" if divisors else "no power of two from 16 to 256 divides it"
        raise ValueError(
            f"{what}: in_features={cols} is not divisible by the group size {g} of scheme {scheme.name!r}; "
            f"choose a group size that divides it ({hint}), or per-output-channel scaling "
            f"(group_size=None, e.g. 'int4'), or leave this module out")
    return g


_CHUNK = 1 << 22  # weights per chunk of rows: bounds the float64 temporaries (~32 MiB each)


def quantize_weight(weight: torch.Tensor, scheme: str | QuantScheme, *, name: str = "weight") -> QuantizedWeight:
    """Quantize one (out_features, in_features) weight; see the module docstring for the schemes.

    The codes come from the float64 quotient of the weight by its float32 scale, so a float32,
    bfloat16 or float64 weight gives the codes of its exact value; ``dequantized`` is cast back
    to the weight's dtype (one rounding of the exact product ``q · s``). Rows are processed in
    chunks of about 4M weights, so the float64 temporaries stay bounded for any layer size.
    """
    scheme = get_scheme(scheme)
    g = _check_groups(weight, scheme, name)
    W = weight.detach()
    R, C = W.shape
    G = C // g
    codes = torch.empty(R, C, dtype=torch.int16, device=W.device)
    deq = torch.empty(R, C, dtype=W.dtype, device=W.device)
    scale = torch.empty(R, G, dtype=torch.float32, device=W.device)
    step = torch.empty(R, G, dtype=torch.float64, device=W.device)
    zero = torch.empty(R, G, dtype=torch.int16, device=W.device) if scheme.kind == "int" and not scheme.symmetric \
        else None
    rows = max(1, _CHUNK // C)
    for r0 in range(0, R, rows):
        r1 = min(R, r0 + rows)
        c, s, z, st, d = _quantize_rows(W[r0:r1].reshape(r1 - r0, G, g), scheme)
        codes[r0:r1], scale[r0:r1], step[r0:r1], deq[r0:r1] = c.reshape(r1 - r0, C), s, st, d.reshape(r1 - r0, C)
        if zero is not None:
            zero[r0:r1] = z
    return QuantizedWeight(codes=codes, scale=scale, zero_point=zero, step=step, dequantized=deq)


def _quantize_rows(Wg: torch.Tensor, scheme: QuantScheme):
    """One chunk: ``Wg`` (r, G, g) -> codes (r, G, g), scale (r, G) float32, zero point or None,
    step (r, G) float64, de-quantized (r, G, g) in ``Wg``'s dtype."""
    w = Wg.double()  # (r, G, g)
    if scheme.kind == "int":
        if scheme.symmetric:
            q_max = 2 ** (scheme.bits - 1) - 1
            q_lo, q_hi = -q_max, q_max
            absmax = Wg.abs().amax(dim=-1).float()  # (r, G) float32
            scale = absmax / q_max  # float32 arithmetic, as the libraries store it
            zero = None
        else:
            q_lo, q_hi = 0, 2 ** scheme.bits - 1
            lo = Wg.amin(dim=-1).float().clamp(max=0.0)  # (r, G) the range always holds 0
            hi = Wg.amax(dim=-1).float().clamp(min=0.0)
            scale = (hi - lo) / float(q_hi - q_lo)  # float32
            safe32 = torch.where(scale > 0, scale, torch.ones_like(scale))
            zero = (q_lo - torch.round(lo / safe32)).clamp(q_lo, q_hi)  # float32 integral values
        safe = torch.where(scale > 0, scale, torch.ones_like(scale)).double().unsqueeze(-1)  # (r, G, 1)
        z = 0.0 if zero is None else zero.double().unsqueeze(-1)
        codes = (torch.round(w / safe) + z).clamp(q_lo, q_hi)  # (r, G, g) float64, integral
        deq = (codes - z) * scale.double().unsqueeze(-1)  # exact in float64 (|q| <= 255, 24-bit scale)
        return codes.to(torch.int16), scale, None if zero is None else zero.to(torch.int16), scale.double(), \
            deq.to(Wg.dtype)
    table = _table(scheme.kind, Wg.device)  # (16,) float64 holding float32 values
    # sort the table; FP4's two zeros: -0 (index 8) sorts before +0 (index 0)
    key = table - 1e-30 * (torch.signbit(table) & (table == 0)).double()
    order = torch.argsort(key)  # (16,)
    bounds = (table[order[:-1]] + table[order[1:]]) / 2  # (15,) midpoints between neighbours
    absmax = Wg.abs().amax(dim=-1).float()  # (r, G) float32
    safe = torch.where(absmax > 0, absmax, torch.ones_like(absmax)).double().unsqueeze(-1)
    x = (w / safe).clamp(-1.0, 1.0).contiguous()  # (r, G, g)
    codes = order[torch.bucketize(x, bounds, right=False)]  # (r, G, g); x == midpoint -> the lower value
    if scheme.kind == "fp4":
        codes = torch.where(x == 0, torch.zeros_like(codes), codes)  # an exact zero is +0 (index 0)
    deq = table[codes] * absmax.double().unsqueeze(-1)
    step = absmax.double() * ((float(table.max()) - float(table.min())) / (scheme.levels - 1))
    return codes.to(torch.int16), absmax, None, step, deq.to(Wg.dtype)


# --------------------------------------------------------------------------- which modules
def _conv1d_type() -> type | None:
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:  # pragma: no cover - transformers is a core dependency
        return None
    return Conv1D


def _weight_matrix(module: nn.Module) -> torch.Tensor:
    """The module's weight as (rows = outputs or tokens, cols = inputs) (a view, no copy)."""
    conv1d = _conv1d_type()
    if conv1d is not None and isinstance(module, conv1d):
        return module.weight.t()  # Conv1D stores (in, out)
    return module.weight


def quantizable_modules(model: nn.Module, *, lm_head: bool = False, embeddings: bool = False
                        ) -> dict[str, nn.Module]:
    """The modules whose weights a quantization attack replaces, by module name, in model order.

    Every ``nn.Linear`` / ``Conv1D`` inside the decoder blocks (found structurally,
    :func:`geffect.groups.find_block_list`); with ``lm_head``, the output projection
    (``get_output_embeddings()``); with ``embeddings``, each ``nn.Embedding`` outside the blocks.
    A weight shared by two modules (tied embedding and LM head) is listed once.
    """
    block_prefix, _ = find_block_list(model)
    linear_types: tuple[type, ...] = (nn.Linear,)
    conv1d = _conv1d_type()
    if conv1d is not None:
        linear_types += (conv1d,)
    head = model.get_output_embeddings() if lm_head and hasattr(model, "get_output_embeddings") else None
    if lm_head and head is None:
        raise ValueError(f"lm_head=True, but {type(model).__name__} has no output embedding "
                         "(get_output_embeddings() returned None)")
    out: dict[str, nn.Module] = {}
    seen: set[int] = set()
    for name, mod in model.named_modules():
        inside = name.startswith(block_prefix + ".")
        take = (inside and isinstance(mod, linear_types)) or (head is not None and mod is head) or (
            embeddings and not inside and isinstance(mod, nn.Embedding))
        w = getattr(mod, "weight", None)
        if not take or not isinstance(w, torch.Tensor) or id(w) in seen:
            continue
        seen.add(id(w))
        out[name] = mod
    if not out:
        raise ValueError(f"no quantizable module found in {type(model).__name__} "
                         f"(no nn.Linear inside the block list {block_prefix!r})")
    return out


def _module_groups(model: nn.Module, modules: dict[str, nn.Module]) -> dict[str, tuple[str, str]]:
    """module name -> (parameter group, module subtype) of its weight."""
    group_of = {n: g for g, names in parameter_groups(model).items() for n in names}
    pname = {id(p): n for n, p in model.named_parameters()}  # canonical (first) names
    out = {}
    for name, mod in modules.items():
        pn = pname.get(id(mod.weight), f"{name}.weight")
        out[name] = (group_of.get(pn, "other"), module_subtype(pn, model))
    return out


def _iter_progress(items, progress: bool, desc: str) -> Iterator:
    if not progress:
        return iter(items)
    from tqdm.auto import tqdm

    return iter(tqdm(items, desc=desc, leave=False))


# --------------------------------------------------------------------------- the attack
@dataclass
class QuantizedModel:
    """The result of :func:`quantize_model`.

    Attributes:
        model: the fake-quantized model (weights = de-quantized values, the model's dtype).
        scheme: the :class:`QuantScheme` used.
        stats: one row per quantized module: ``module, group, kind, rows, cols, numel, step_mean``
            (mean of the per-weight step), ``scale_mean``, ``weight_fro`` (‖W‖_F), ``rel_error``
            (‖Q(W) − W‖_F / ‖W‖_F), ``mean_abs_error``, ``max_abs_error``, and ``scheme``.
    """

    model: nn.Module
    scheme: QuantScheme
    stats: "pd.DataFrame" = field(repr=False)

    def relative_error(self) -> float:
        """‖Q(θ) − θ‖_F / ‖θ‖_F over all quantized weights."""
        s = self.stats
        num = float(((s["rel_error"] * s["weight_fro"]) ** 2).sum())
        den = float((s["weight_fro"] ** 2).sum())
        return math.sqrt(num / den) if den > 0 else 0.0


def quantize_model(
    model: nn.Module,
    scheme: str | QuantScheme = "int4-g128",
    *,
    lm_head: bool = False,
    embeddings: bool = False,
    inplace: bool = False,
    progress: bool = False,
) -> QuantizedModel:
    """Fake-quantize ``model``'s weights with ``scheme``: each selected weight becomes ``Q(W)``.

    Args:
        model: any torch model with a decoder block list (a Hugging Face causal LM).
        scheme: a :class:`QuantScheme` or a name (:func:`get_scheme`), default ``int4-g128``.
        lm_head / embeddings: also quantize the output projection / the input embeddings
            (default: only the linear layers inside the blocks; see the module docstring).
        inplace: overwrite ``model``'s weights instead of quantizing a deep copy.
        progress: a tqdm bar over the modules.

    Returns:
        :class:`QuantizedModel` (``.model``, ``.stats``). Biases, norms and any weight not
        selected keep their values.
    """
    import pandas as pd

    scheme = get_scheme(scheme)
    target = model if inplace else copy.deepcopy(model)
    modules = quantizable_modules(target, lm_head=lm_head, embeddings=embeddings)
    groups = _module_groups(target, modules)
    rows = []
    for name in _iter_progress(list(modules), progress, f"quantize {scheme.name}"):
        mod = modules[name]
        W = _weight_matrix(mod)
        qw = quantize_weight(W, scheme, name=name)
        err = qw.dequantized.double() - W.detach().double()
        w_fro = float(W.detach().double().norm())
        with torch.no_grad():
            W.copy_(qw.dequantized)  # W is a view of mod.weight (transposed for Conv1D)
        rows.append({
            "module": name, "group": groups[name][0], "kind": groups[name][1],
            "rows": W.shape[0], "cols": W.shape[1], "numel": W.numel(),
            "step_mean": float(qw.step.mean()), "scale_mean": float(qw.scale.double().mean()),
            "weight_fro": w_fro, "rel_error": float(err.norm()) / w_fro if w_fro > 0 else 0.0,
            "mean_abs_error": float(err.abs().mean()), "max_abs_error": float(err.abs().max()),
        })
    stats = pd.DataFrame(rows)
    stats.insert(0, "scheme", scheme.name)
    logger.info("quantized %d modules (%d weights) with %s: relative error %.4g", len(rows),
                int(stats["numel"].sum()), scheme.name,
                math.sqrt(float(((stats["rel_error"] * stats["weight_fro"]) ** 2).sum())
                          / max(float((stats["weight_fro"] ** 2).sum()), 1e-300)))
    return QuantizedModel(model=target, scheme=scheme, stats=stats)


# --------------------------------------------------------------------------- update size vs step
_MEAN_COLS = ("update_mean_abs", "step_target", "step_unlearned", "frac_below_half_step",
              "changed_code_frac", "changed_value_frac")


def _aggregate(frame: "pd.DataFrame", level: str, name: str, group: str) -> dict:
    n = frame["numel"].to_numpy(dtype=float)
    row = {"level": level, "name": name, "group": group, "kind": "",
           "numel": int(n.sum())}
    for c in ("update_sq", "quantized_update_sq"):
        row[c] = float(frame[c].sum())
    for c in _MEAN_COLS:
        row[c] = float((frame[c].to_numpy(dtype=float) * n).sum() / n.sum())
    row["update_max_abs"] = float(frame["update_max_abs"].max())
    return row


def update_size(
    target: nn.Module,
    unlearned: nn.Module,
    scheme: str | QuantScheme = "int4-g128",
    *,
    lm_head: bool = False,
    embeddings: bool = False,
    progress: bool = False,
) -> "pd.DataFrame":
    """How large the unlearning update is against the quantization step, per module and group.

    For each quantized module (the selection of :func:`quantize_model`) with target weight
    ``T`` and unlearned weight ``U`` (same architecture), ``Δ = U − T``:

    - ``update_fro`` = ‖Δ‖_F, ``update_mean_abs`` = mean |Δ|, ``update_max_abs`` = max |Δ|;
    - ``step_target`` / ``step_unlearned``: the mean quantization step of ``scheme`` on ``T`` /
      ``U`` (:attr:`QuantizedWeight.step`, averaged over the weights);
    - ``ratio`` = ``update_mean_abs / step_target`` (Zhang et al.: recovery when this is small);
    - ``frac_below_half_step``: fraction of weights with |Δ| < step/2 (their group's step on T);
    - ``changed_code_frac``: fraction of weights whose code differs between Q(T) and Q(U)
      (~0: the quantized unlearned model is the quantized target model, up to scale changes);
    - ``changed_value_frac``: fraction whose de-quantized value differs (codes or scale);
    - ``quantized_update_fro`` = ‖Q(U) − Q(T)‖_F and ``survival`` = that / ‖Δ‖_F (how much of
      the update the quantized models keep; 0 when they coincide).

    Returns:
        A tidy frame with ``level`` ``"module"`` (one row per module, ``name`` = module name),
        ``"group"`` (the parameter groups of :func:`geffect.groups.parameter_groups`: ``embed``,
        ``layer.i``, ``lm_head``, aggregated over their quantized modules) and ``"model"`` (all);
        sums for norms, numel-weighted means for the rest; a ``scheme`` column.
    """
    import numpy as np
    import pandas as pd

    scheme = get_scheme(scheme)
    mods_t = quantizable_modules(target, lm_head=lm_head, embeddings=embeddings)
    mods_u = quantizable_modules(unlearned, lm_head=lm_head, embeddings=embeddings)
    if list(mods_t) != list(mods_u):
        missing = sorted(set(mods_t) ^ set(mods_u))[:5]
        raise ValueError(f"target and unlearned models differ in their quantizable modules (e.g. {missing}); "
                         "update_size needs two models of the same architecture")
    groups = _module_groups(target, mods_t)
    rows = []
    for name in _iter_progress(list(mods_t), progress, f"update size {scheme.name}"):
        T, U = _weight_matrix(mods_t[name]), _weight_matrix(mods_u[name])
        if T.shape != U.shape:
            raise ValueError(f"{name}: target weight {tuple(T.shape)} vs unlearned {tuple(U.shape)}; "
                             "update_size needs two models of the same architecture")
        qt, qu = quantize_weight(T, scheme, name=name), quantize_weight(U.to(T.device), scheme, name=name)
        delta = U.detach().to(T.device).double() - T.detach().double()  # (R, C)
        step_t = qt.expand(qt.step)  # (R, C)
        dq = qu.dequantized.double() - qt.dequantized.double()
        rows.append({
            "level": "module", "name": name, "group": groups[name][0], "kind": groups[name][1],
            "numel": T.numel(),
            "update_sq": float(delta.square().sum()),
            "update_mean_abs": float(delta.abs().mean()), "update_max_abs": float(delta.abs().max()),
            "step_target": float(qt.step.mean()), "step_unlearned": float(qu.step.mean()),
            "frac_below_half_step": float((delta.abs() < step_t / 2).double().mean()),
            "changed_code_frac": float((qt.codes != qu.codes).double().mean()),
            "changed_value_frac": float((dq != 0).double().mean()),
            "quantized_update_sq": float(dq.square().sum()),
        })
    mods = pd.DataFrame(rows)
    agg = [_aggregate(part, "group", g, g) for g, part in mods.groupby("group", sort=False)]
    agg.append(_aggregate(mods, "model", "model", ""))
    out = pd.concat([mods, pd.DataFrame(agg)], ignore_index=True)
    out["update_fro"] = np.sqrt(out.pop("update_sq"))
    out["quantized_update_fro"] = np.sqrt(out.pop("quantized_update_sq"))
    with np.errstate(divide="ignore", invalid="ignore"):
        out["ratio"] = np.where(out["step_target"] > 0, out["update_mean_abs"] / out["step_target"], np.nan)
        out["survival"] = np.where(out["update_fro"] > 0, out["quantized_update_fro"] / out["update_fro"], np.nan)
    out.insert(0, "scheme", scheme.name)
    cols = ["scheme", "level", "name", "group", "kind", "numel", "update_fro", "update_mean_abs", "update_max_abs",
            "step_target", "step_unlearned", "ratio", "frac_below_half_step", "changed_code_frac",
            "changed_value_frac", "quantized_update_fro", "survival"]
    return out[cols]
