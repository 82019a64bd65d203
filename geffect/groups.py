"""Parameter groups: the columns of a G-effect matrix.

Wang et al. (ICLR 2025, "Rethinking LLM Unlearning Objectives: A Gradient Perspective and
Go Beyond") split a G-effect by parameter block (Sec. 4, per-layer G-effects). The inner
product over all parameters is a sum over any partition of them, so the split is exact:
``E[i, :].sum() == <grad f_i, d>``.

Fine groups (:func:`parameter_groups`), found from the model's *structure*, not from one
family's attribute names:

- ``embed``: every ``nn.Embedding`` outside the decoder blocks (token and learned position
  embeddings). A weight tied between the input embedding and the LM head is a single
  parameter; it appears **once, under ``embed``**, and its column counts both of its uses.
- ``layer.0`` ... ``layer.{L-1}``: the decoder blocks, i.e. the children of the largest
  ``nn.ModuleList`` whose children all share one class.
- ``final_norm``: normalisation modules outside the blocks registered after the block list.
- ``lm_head``: the output projection (``model.get_output_embeddings()`` when the model has
  one, else a Linear outside the blocks whose ``out_features`` equals the vocabulary size);
  empty when its weight is tied to the embedding and it has no bias.
- ``other``: anything left (present only when non-empty). No parameter is ever dropped.

Coarse views (:func:`coarse_groups`) are unions of parameters: ``"thirds"`` (embed / shallow /
middle / deep / lm, the paper's buckets, :func:`layer_bucket`) is a union of fine groups, so a
fine matrix can be summed into it with :func:`aggregate`. ``"attn_mlp"`` (embed / attn / mlp /
norm / lm_head, :func:`module_type`) splits each block by module type, so compute it by passing
the coarse groups to :func:`geffect.per_instance_dots` directly.

Module types (:func:`module_type`, :func:`module_subtype`) are the one taxonomy of parameters
by the module that owns them, shared by the ``"attn_mlp"`` view and by the weight-mask
summaries of :mod:`geffect.masking`.

Parameter names are those of ``model.named_parameters()`` (duplicates removed), which is also
the key space of a direction dict.
"""
from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

__all__ = ["LAYER_BUCKETS", "MODULE_SUBTYPES", "MODULE_TYPES", "aggregate", "coarse_groups", "find_block_list",
           "is_norm_module", "layer_bucket", "layer_buckets", "layer_index", "module_subtype", "module_type",
           "parameter_groups"]

_LAYER_RE = re.compile(r"^layer\.(\d+)(?:\.[a-z_]+)?$")  # layer.3, or layer.3.attn (module_groups)
LAYER_BUCKETS = ("embed", "shallow", "middle", "deep", "lm")
MODULE_TYPES = ("embed", "attn", "mlp", "norm", "lm_head", "other")
MODULE_SUBTYPES = ("embed", "attn.q", "attn.k", "attn.v", "attn.o", "attn.qkv", "attn.other",
                   "mlp.gate", "mlp.up", "mlp.down", "mlp.gate_up", "mlp.other", "norm", "lm_head", "other")


def is_norm_module(module: nn.Module) -> bool:
    """True for LayerNorm / RMSNorm / GroupNorm-type modules (by type, else by class name)."""
    norm_types: tuple[type, ...] = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    if hasattr(nn, "RMSNorm"):
        norm_types = norm_types + (nn.RMSNorm,)
    if isinstance(module, norm_types):
        return True
    return "norm" in type(module).__name__.lower()


def find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The decoder block list: the largest ``nn.ModuleList`` whose children share one class.

    Ties on length are broken by parameter count. Raises ``ValueError`` if the model has no
    such list (then every parameter would be ``other``; pass explicit groups instead).
    """
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        classes = {type(child) for child in mod}
        if len(classes) != 1:
            continue
        n_params = sum(p.numel() for p in mod.parameters())
        if n_params == 0:
            continue
        key = (len(mod), n_params)
        if best is None or key > best[:2]:
            best = (len(mod), n_params, name, mod)
    if best is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.ModuleList of same-class blocks with parameters; "
            "pass explicit groups (a dict group name -> parameter names) instead"
        )
    return best[2], best[3]


def _hf_embedding(model: nn.Module, getter_name: str) -> nn.Module | None:
    """``model.get_input_embeddings()`` / ``get_output_embeddings()`` (Hugging Face), or None
    when the model has no such getter, it is not implemented, or it returns no module."""
    getter = getattr(model, getter_name, None)
    if not callable(getter):
        return None
    try:
        out = getter()
    except (NotImplementedError, AttributeError):
        return None
    return out if isinstance(out, nn.Module) else None


def _output_embedding(model: nn.Module, vocab_sizes: set[int]) -> nn.Module | None:
    out = _hf_embedding(model, "get_output_embeddings")
    if out is not None:
        return out
    # Structural fallback: the last Linear-like module producing vocabulary-sized outputs.
    found = None
    for _, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and mod.out_features in vocab_sizes:
            found = mod
    return found


def parameter_groups(model: nn.Module) -> "OrderedDict[str, list[str]]":
    """Fine parameter groups ``embed, layer.0.., final_norm, lm_head[, other]`` -> parameter names.

    Every parameter of ``model.named_parameters()`` appears in exactly one group; a tied
    embedding / LM-head weight appears once, under ``embed``.
    """
    block_prefix, blocks = find_block_list(model)
    param_name = {id(p): n for n, p in model.named_parameters()}  # canonical (first) names
    assigned: dict[str, str] = {}

    def claim(group: str, module: nn.Module) -> None:
        for p in module.parameters(recurse=True):
            name = param_name.get(id(p))
            if name is not None and name not in assigned:
                assigned[name] = group

    # 1. decoder blocks
    for i, block in enumerate(blocks):
        claim(f"layer.{i}", block)

    # 2. embeddings outside the blocks (token + position)
    vocab_sizes: set[int] = set()
    emb = _hf_embedding(model, "get_input_embeddings")
    if isinstance(emb, nn.Embedding):
        vocab_sizes.add(emb.num_embeddings)
        claim("embed", emb)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Embedding) and not name.startswith(block_prefix + "."):
            if not vocab_sizes:
                vocab_sizes.add(mod.num_embeddings)
            claim("embed", mod)

    # 3. LM head
    head = _output_embedding(model, vocab_sizes)
    if head is not None:
        claim("lm_head", head)

    # 4. norms after the block list, outside it
    seen_blocks = False
    for name, mod in model.named_modules():
        if mod is blocks:
            seen_blocks = True
            continue
        if seen_blocks and not name.startswith(block_prefix + ".") and is_norm_module(mod):
            claim("final_norm", mod)

    groups: OrderedDict[str, list[str]] = OrderedDict()
    groups["embed"] = []
    for i in range(len(blocks)):
        groups[f"layer.{i}"] = []
    groups["final_norm"] = []
    groups["lm_head"] = []
    other: list[str] = []
    for name in param_name.values():  # model order inside each group
        group = assigned.get(name)
        (groups[group] if group is not None else other).append(name)
    if other:
        groups["other"] = other
    return groups


def module_groups(model: nn.Module) -> "OrderedDict[str, list[str]]":
    """:func:`parameter_groups` with every decoder block split by module type.

    ``layer.<i>`` becomes ``layer.<i>.attn``, ``layer.<i>.mlp``, ``layer.<i>.norm`` (and
    ``layer.<i>.other`` for anything else), by :func:`module_type`; ``embed``, ``final_norm``,
    ``lm_head`` stay as they are. Summing the sub-groups of a block gives its ``layer.<i>`` value,
    so one G-effect pass answers both "which layer" and "attention or MLP". Empty sub-groups are
    left out.
    """
    out: OrderedDict[str, list[str]] = OrderedDict()
    for group, names in parameter_groups(model).items():
        if layer_index(group) is None:
            out[group] = names
            continue
        parts: OrderedDict[str, list[str]] = OrderedDict((t, []) for t in ("attn", "mlp", "norm", "other"))
        for name in names:
            t = module_type(name, model)
            parts[t if t in parts else "other"].append(name)
        out.update((f"{group}.{t}", ns) for t, ns in parts.items() if ns)
    return out


def layer_of(group: str) -> str:
    """``layer.<i>`` for a block sub-group ``layer.<i>.<type>``; any other group unchanged."""
    i = layer_index(group)
    return f"layer.{i}" if i is not None else group


def layer_index(group: str) -> int | None:
    """The block index of a fine group name ``layer.<i>`` (or sub-group ``layer.<i>.<type>``), else None."""
    m = _LAYER_RE.match(group)
    return int(m.group(1)) if m else None


def layer_bucket(group: str, num_layers: int) -> str:
    """The coarse bucket of a fine group: ``embed``, ``shallow`` / ``middle`` / ``deep``, ``lm`` or ``other``.

    Block ``layer.i`` of ``num_layers`` goes to third ``min(2, floor(3 i / L))`` (Wang et al.,
    ICLR 2025, split the decoder layers into shallow, middle and deep thirds); ``final_norm``
    and ``lm_head`` form ``lm``; any other group (e.g. ``other``) is ``other``.
    """
    i = layer_index(group)
    if i is not None:
        if i >= num_layers:
            raise ValueError(f"group {group!r} is outside a model of num_layers={num_layers} blocks")
        return LAYER_BUCKETS[1 + min(2, (3 * i) // num_layers)]
    if group == "embed":
        return "embed"
    if group in ("final_norm", "lm_head"):
        return "lm"
    return "other"


def layer_buckets(groups: Iterable[str]) -> dict[str, str]:
    """:func:`layer_bucket` of every group name, with L = 1 + the largest block index among them."""
    groups = list(dict.fromkeys(groups))
    layers = [i for g in groups if (i := layer_index(g)) is not None]
    num_layers = max(layers) + 1 if layers else 0
    return {g: layer_bucket(g, num_layers) for g in groups}


# --------------------------------------------------------------------------- module types
_ATTN_LEAVES = {
    "q_proj": "attn.q", "query": "attn.q", "q": "attn.q", "wq": "attn.q",
    "k_proj": "attn.k", "key": "attn.k", "k": "attn.k", "wk": "attn.k",
    "v_proj": "attn.v", "value": "attn.v", "v": "attn.v", "wv": "attn.v",
    "o_proj": "attn.o", "out_proj": "attn.o", "dense": "attn.o", "c_proj": "attn.o", "o": "attn.o", "wo": "attn.o",
    "qkv_proj": "attn.qkv", "c_attn": "attn.qkv", "query_key_value": "attn.qkv", "wqkv": "attn.qkv",
}
_MLP_LEAVES = {
    "gate_proj": "mlp.gate", "w1": "mlp.gate",
    "up_proj": "mlp.up", "fc1": "mlp.up", "c_fc": "mlp.up", "w3": "mlp.up", "dense_h_to_4h": "mlp.up",
    "down_proj": "mlp.down", "fc2": "mlp.down", "c_proj": "mlp.down", "w2": "mlp.down", "dense_4h_to_h": "mlp.down",
    "gate_up_proj": "mlp.gate_up",
}
# leaf names that say their kind without an attention / MLP module around them (e.g. OPT's fc1)
_DISTINCT_LEAVES = {
    **{k: _ATTN_LEAVES[k] for k in ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "c_attn", "query_key_value")},
    **{k: _MLP_LEAVES[k] for k in ("gate_proj", "up_proj", "down_proj", "gate_up_proj", "fc1", "fc2", "c_fc",
                                   "dense_h_to_4h", "dense_4h_to_h")},
}
_ATTN_WORDS = ("attn", "attention")
_MLP_WORDS = ("mlp", "ffn", "feed_forward", "feedforward")
_HEAD_LEAVES = ("lm_head", "embed_out", "output")


def _kind(word: str) -> str | None:
    """'attn' / 'mlp' when a module (attribute or class) name says so."""
    word = word.lower()
    if any(k in word for k in _ATTN_WORDS):
        return "attn"
    if any(k in word for k in _MLP_WORDS):
        return "mlp"
    return None


def _input_vocab_sizes(model: nn.Module) -> set[int]:
    getter = getattr(model, "get_input_embeddings", None)
    try:
        emb = getter() if callable(getter) else None
    except (NotImplementedError, AttributeError):
        emb = None
    return {emb.num_embeddings} if isinstance(emb, nn.Embedding) else set()


def module_subtype(name: str, model: nn.Module | None = None) -> str:
    """The fine module type of parameter ``name``: one of :data:`MODULE_SUBTYPES`.

    With a model the owning module decides first, structurally: the output head (as found by
    :func:`parameter_groups`) -> ``lm_head``; an ``nn.Embedding`` -> ``embed``; a norm module
    (:func:`is_norm_module`) -> ``norm``. Without one, the owner's attribute name decides
    (``lm_head``/``embed_out``/``output``; ``*embed*``/``wte``/``wpe``; ``*norm*``/``ln*``).
    Otherwise the first module on the path, from the root, whose attribute or (with a model)
    class name contains ``attn``/``attention`` or ``mlp``/``ffn``/``feed_forward`` makes the
    parameter ``attn.*`` or ``mlp.*``, refined by the owner's name (q_proj, k_proj, v_proj,
    o_proj/dense/out_proj/c_proj; gate_proj/w1, up_proj/fc1/c_fc/w3, down_proj/fc2/c_proj/w2;
    fused qkv / gate_up), else ``attn.other`` / ``mlp.other``. Unambiguous projection names
    (q_proj, fc1, dense_h_to_4h, ...) are recognised outside such modules too. Anything else
    is ``other``.
    """
    mod_path = name.split(".")[:-1]
    leaf = mod_path[-1].lower() if mod_path else ""
    modules: list[nn.Module] = []  # the modules on the path below the root, outermost first
    if model is not None:
        module = model
        try:
            for part in mod_path:
                module = module.get_submodule(part)
                modules.append(module)
        except AttributeError:
            modules = []
    owner = modules[-1] if modules and len(modules) == len(mod_path) else None
    if owner is not None:
        if owner is _output_embedding(model, _input_vocab_sizes(model)):
            return "lm_head"
        if isinstance(owner, nn.Embedding):
            return "embed"
        if is_norm_module(owner):
            return "norm"
    else:
        if leaf in _HEAD_LEAVES:
            return "lm_head"
        if "embed" in leaf or leaf in ("wte", "wpe"):
            return "embed"
        if "norm" in leaf or re.fullmatch(r"ln(_\w+)?", leaf):
            return "norm"
    for i, part in enumerate(mod_path):
        kind = _kind(part) or (_kind(type(modules[i]).__name__) if i < len(modules) else None)
        if kind == "attn":
            return _ATTN_LEAVES.get(leaf, "attn.other")
        if kind == "mlp":
            return _MLP_LEAVES.get(leaf, "mlp.other")
    return _DISTINCT_LEAVES.get(leaf, "other")


def module_type(name: str, model: nn.Module | None = None) -> str:
    """The module type of parameter ``name``: one of :data:`MODULE_TYPES` (``attn.q`` etc. pooled).

    ``module_subtype(name, model)`` up to its first dot; see :func:`module_subtype`.
    """
    return module_subtype(name, model).split(".")[0]


# fine groups whose module type is known from the group alone
_GROUP_MODULE_TYPES = {"embed": "embed", "final_norm": "norm", "lm_head": "lm_head"}


def coarse_groups(
    groups: Mapping[str, Sequence[str]],
    scheme: str = "thirds",
    *,
    model: nn.Module | None = None,
) -> "OrderedDict[str, list[str]]":
    """Coarse views of fine groups, as coarse name -> parameter names.

    ``scheme="thirds"``: ``embed``, ``shallow``, ``middle``, ``deep``, ``lm`` (= final_norm +
    lm_head), by :func:`layer_bucket`. ``scheme="attn_mlp"``: ``embed``, ``attn``, ``mlp``,
    ``norm`` (block norms and the final norm), ``lm_head``, by :func:`module_type` (with
    ``model``: from the module structure, else from the names); the ``embed``, ``final_norm``
    and ``lm_head`` groups keep their own type. Parameters of no bucket or type go to ``other``
    (present only when non-empty).
    """
    if scheme == "thirds":
        keys: Sequence[str] = LAYER_BUCKETS
        bucket = layer_buckets(groups)
        owner = {n: bucket[g] for g, names in groups.items() for n in names}
    elif scheme == "attn_mlp":
        keys = ("embed", "attn", "mlp", "norm", "lm_head")
        owner = {n: _GROUP_MODULE_TYPES.get(g) or module_type(n, model) for g, names in groups.items() for n in names}
    else:
        raise ValueError(f"unknown coarse scheme {scheme!r}; use 'thirds' or 'attn_mlp'")
    out: OrderedDict[str, list[str]] = OrderedDict((k, []) for k in keys)
    for n, c in owner.items():
        out.setdefault(c, []).append(n)  # "other" is the only key not made above
    return out


def aggregate(
    matrix: torch.Tensor,
    groups: Mapping[str, Sequence[str]],
    coarse: Mapping[str, Sequence[str]],
) -> torch.Tensor:
    """Sum the columns of a fine matrix ``[N, G]`` into coarse groups: ``[N, C]``.

    Column g of ``matrix`` belongs to the g-th key of ``groups``. Each non-empty fine group
    must lie entirely inside one coarse group (true for ``"thirds"``); otherwise a
    ``ValueError`` says to compute the coarse groups directly.
    """
    if matrix.shape[-1] != len(groups):
        raise ValueError(f"matrix has {matrix.shape[-1]} columns but {len(groups)} groups were given")
    owner = {name: c for c, names in coarse.items() for name in names}
    cols: dict[str, list[int]] = {c: [] for c in coarse}
    for j, (g, names) in enumerate(groups.items()):
        targets = {owner.get(n) for n in names}
        if not names:
            continue
        if len(targets) != 1 or None in targets:
            raise ValueError(
                f"fine group {g!r} is split across coarse groups {sorted(map(str, targets))}; "
                "call per_instance_dots(..., groups=coarse) to compute this view directly"
            )
        cols[targets.pop()].append(j)
    out = matrix.new_zeros(*matrix.shape[:-1], len(coarse))  # (N, C)
    for k, c in enumerate(coarse):
        if cols[c]:
            out[..., k] = matrix[..., cols[c]].sum(dim=-1)
    return out
