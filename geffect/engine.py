"""Per-instance, per-group gradient inner products: the primitive behind every G-effect.

For a model theta, a batch of N instances with per-instance scalar losses f_i(theta), a
fixed direction d (parameter name -> tensor) and parameter groups g, compute

    E[i, g] = sum_{p in g} < grad_p f_i(theta), d_p >                       (N, G)

This is Definition 1 of Wang et al. (ICLR 2025, "Rethinking LLM Unlearning Objectives: A
Gradient Perspective and Go Beyond") evaluated per probe instance and per parameter block:
with d = grad L_u, the G-effect of L_u on a probe set D is the mean of the row sums.

Engines (all return the same matrix up to floating-point rounding):

- ``"ghost"`` (default): one forward and one backward with module hooks. Parameters are
  frozen during the pass, so no weight gradient is ever computed; each layer's rule in
  :mod:`geffect.rules` combines its captured input activations with the gradient of
  ``sum_i f_i`` w.r.t. its output (which, f being per-instance separable, is grad f_i on
  row i). Products are taken in float32 (float64 for float64 models). Cost ~ one training
  step; memory ~ the activations of one training step.
- ``"loop"``: the naive reference, one forward+backward per instance with plain autograd.
  Kept in the library so users can check the fast engine on their own models.
- ``"func"``: ``torch.func`` ``vmap(grad)`` per-sample full gradients in chunks (used by the
  benchmark). ``vmap`` cannot trace Hugging Face's attention-mask construction, so this
  engine drops the mask: valid only for right-padded batches (checked) whose loss ignores
  padding positions (true for ``"answer_nll"`` / ``"logprob"``).

Sharded models (FSDP2 ``fully_shard``: parameters and directions are ``DTensor`` shards): the
ghost engine gathers one module's direction at a time, in the backward hook that uses it
(``DTensor.full_tensor()``; the fallback rule's tangents need it in the forward hook), and
frees it right after, as FSDP2 gathers one block's parameters at a time for its own forward.
No rank holds the full gradient. The forward and backward are collectives then: every rank
must call :func:`per_instance_dots` together (on its own instances). ``"loop"`` and ``"func"``
need plain tensors.

Assumptions: instances are independent in the forward pass (the model is put in eval mode
for the call, so dropout is off); every parameter is used inside the forward of a module that
owns it (Hugging Face tied LM heads are modules sharing the embedding weight and are counted
for both uses).
"""
from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.utils._pytree import tree_flatten, tree_unflatten

from geffect.distributed import full_tensor, is_dtensor
from geffect.groups import parameter_groups
from geffect.losses import IGNORE_INDEX, answer_logprob, answer_mask, answer_nll
from geffect.rules import batch_sum, fallback_tangents, get_rule

logger = logging.getLogger(__name__)

__all__ = ["per_instance_dots", "model_logits", "resolve_loss", "ENGINES", "LossSpec"]

ENGINES = ("ghost", "loop", "func")
LossSpec = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "answer_nll": answer_nll,  # f_i = R(x_i), mean answer NLL
    "logprob": answer_logprob,  # f_i = log p(y_i | x_i), summed answer log-likelihood
}


def resolve_loss(loss: LossSpec) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``"answer_nll"``, ``"logprob"`` or a callable ``(logits, labels) -> (B,)``."""
    if callable(loss):
        return loss
    if loss in _LOSSES:
        return _LOSSES[loss]
    raise ValueError(f"unknown loss {loss!r}; use one of {sorted(_LOSSES)} or a callable (logits, labels) -> (B,)")


def _call_kwargs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> dict:
    """Only ``input_ids`` / ``attention_mask`` (plus ``use_cache=False`` where accepted)."""
    kwargs: dict = {"input_ids": input_ids}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    try:
        if "use_cache" in inspect.signature(model.forward).parameters:
            kwargs["use_cache"] = False
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        pass
    return kwargs


def _extract_logits(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")


def model_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Call a causal LM with only ``input_ids`` / ``attention_mask`` and return its logits (B, T, V)."""
    return _extract_logits(model(**_call_kwargs(model, input_ids, attention_mask)))


def _batch_tensors(batch: Mapping, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    missing = [k for k in ("input_ids", "labels") if k not in batch]
    if missing:
        raise KeyError(f"batch lacks {missing}; a batch is a dict of input_ids, attention_mask, labels (B, T)")
    ids = batch["input_ids"].to(device)
    am = batch.get("attention_mask")
    am = torch.ones_like(ids) if am is None else am.to(device)
    return ids, am, batch["labels"].to(device)


def _compute_dtype(model: nn.Module) -> torch.dtype:
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return torch.float64 if torch.float64 in dtypes else torch.float32


@contextlib.contextmanager
def _eval_and_frozen(model: nn.Module, trainable: set[int] | None = None) -> Iterator[None]:
    """Eval mode and requires_grad = (id(p) in trainable) for the call; restored in finally."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in flags:
            p.requires_grad_(trainable is not None and id(p) in trainable)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        for m, mode in modes:
            m.training = mode


def _canonical_directions(
    model: nn.Module, direction: Mapping[str, torch.Tensor], needed: set[str], cdtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """Canonical parameter name -> direction (its own dtype, the parameter's device), for the names in ``needed``."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    alias = {n: canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
    params = dict(model.named_parameters())
    unknown = [k for k in direction if k not in alias]
    if unknown:
        raise ValueError(
            f"direction has {len(unknown)} names that are not parameters of {type(model).__name__}, "
            f"e.g. {unknown[:3]}; keys must be model.named_parameters() names (strip 'module.' prefixes)"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in direction.items():
        name = alias[key]
        if name not in needed or (name in out and key != name):
            continue
        p = params[name]
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"direction[{key!r}] has shape {tuple(value.shape)}, parameter has {tuple(p.shape)}")
        # kept in its own dtype: the rules cast one layer's direction at a time (a float32 copy of a
        # whole bf16 direction would cost twice the model's size)
        out[name] = value.detach().to(device=p.device)
    return out


def per_instance_dots(
    model: nn.Module,
    batch: Mapping[str, torch.Tensor],
    direction: Mapping[str, torch.Tensor],
    *,
    loss: LossSpec = "answer_nll",
    groups: Mapping[str, Sequence[str]] | None = None,
    engine: str = "ghost",
    chunk_size: int = 4,
) -> torch.Tensor:
    """Matrix ``E[i, g] = sum_{p in g} <grad_p f_i, direction[p]>``, shape (N, G).

    ``f_i`` is instance i's mean answer NLL (``loss="answer_nll"``), its summed answer
    log-likelihood (``"logprob"``) or ``loss(logits, labels)[i]`` for a per-instance-separable
    callable. Direction names missing from ``direction`` count as zero; ``groups`` default to
    :func:`geffect.parameter_groups`. Returns float32 (float64 for float64 models). The
    model's parameters, ``.grad``, ``requires_grad`` flags and train/eval modes are unchanged
    and no hook is left behind, also when the call raises. ``chunk_size`` only affects
    ``engine="func"`` (instances per ``vmap``).
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; use one of {ENGINES}")
    groups = parameter_groups(model) if groups is None else groups
    loss_fn = resolve_loss(loss)
    all_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    bad = [n for names in groups.values() for n in names if n not in all_names]
    if bad:
        raise ValueError(f"groups name {len(bad)} unknown parameters, e.g. {bad[:3]}")
    canonical = {id(p): n for n, p in model.named_parameters()}
    alias = {n: canonical[id(p)] for n, p in model.named_parameters(remove_duplicate=False)}
    needed = {alias[n] for names in groups.values() for n in names}
    cdtype = _compute_dtype(model)
    device = next(model.parameters()).device
    dirs = _canonical_directions(model, direction, needed, cdtype)
    ids, am, labels = _batch_tensors(batch, device)
    N = ids.shape[0]

    if engine != "ghost" and any(is_dtensor(d) for d in dirs.values()):
        raise ValueError(f"engine={engine!r} needs plain tensors; sharded (DTensor, FSDP2) directions need engine='ghost'")
    per_param: dict[str, torch.Tensor] = {}
    if N > 0 and dirs:
        if engine == "ghost":
            per_param = _ghost(model, ids, am, labels, dirs, loss_fn, cdtype)
        elif engine == "loop":
            per_param = _loop(model, ids, am, labels, dirs, loss_fn, cdtype)
        else:
            per_param = _func(model, ids, am, labels, dirs, loss_fn, cdtype, chunk_size)

    matrix = torch.zeros(N, len(groups), dtype=cdtype, device=device)  # (N, G)
    for j, names in enumerate(groups.values()):
        for n in names:
            if alias[n] in per_param:
                matrix[:, j] += per_param[alias[n]]
    return matrix


def _check_values(values: torch.Tensor, n: int) -> torch.Tensor:
    if values.shape != (n,):
        raise ValueError(f"the loss must return one value per instance, shape ({n},); got {tuple(values.shape)}")
    return values


def _no_autocast(device: torch.device):
    """Autocast off: the backward pass runs the rule hooks with the caller's autocast state, under
    which their float32 matmuls would be recomputed in bf16."""
    return torch.autocast(device_type=device.type, enabled=False)


class _GhostPass:
    """Hook state for one ghost pass (kept here, never on modules or parameters)."""

    def __init__(self, B: int, cdtype: torch.dtype) -> None:
        self.B = B
        self.cdtype = cdtype
        self.capturing = False
        self.leaves: list[torch.Tensor] = []
        self.acc: dict[str, torch.Tensor] = {}

    def add(self, name: str, value: torch.Tensor) -> None:
        value = value.to(self.cdtype)
        self.acc[name] = self.acc[name] + value if name in self.acc else value

    def _check(self, grad_out: torch.Tensor, module: nn.Module) -> torch.Tensor:
        if grad_out.shape[0] != self.B:
            raise RuntimeError(
                f"{type(module).__name__} output is not batch-first (dim 0 = {grad_out.shape[0]}, batch = {self.B}); "
                "register a rule for it with geffect.rules.register_rule"
            )
        return grad_out.to(self.cdtype)

    def _expand(self, a):
        if isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == 1:
            return a.expand(self.B, *a.shape[1:])  # (1, ...) -> (B, ...)
        return a

    def make_hook(self, local_dirs: dict[str, tuple[str, torch.Tensor]]):
        """Forward hook for one module; ``local_dirs``: local name -> (canonical name, direction)."""

        def hook(module: nn.Module, args: tuple, kwargs: dict, output):
            if not self.capturing:
                return None
            self.capturing = False  # children re-run by the fallback's jvp must not capture
            try:
                leaves, spec = tree_flatten(output)
                changed = broadcast = False
                for k, t in enumerate(leaves):
                    if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
                        continue
                    if self.B > 1 and t.dim() > 0 and t.shape[0] == 1:
                        # shared across the batch (e.g. GPT-2 position embeddings (1, T, d)):
                        # expand to (B, T, d) so that the output gradient stays per instance
                        t = t.expand(self.B, *t.shape[1:]).clone()
                        broadcast = changed = True
                    if not t.requires_grad:
                        leaf = t.detach().requires_grad_(True)
                        self.leaves.append(leaf)
                        t = leaf.clone()  # non-leaf: in-place ops downstream stay legal
                        changed = True
                    leaves[k] = t
                if broadcast:
                    args = tuple(self._expand(a) for a in args)
                rule = get_rule(module)
                directions = {local: d for local, (_, d) in local_dirs.items()}
                if rule is not None and len(leaves) == 1 and isinstance(leaves[0], torch.Tensor):

                    def on_grad(g: torch.Tensor, module=module, args=args) -> None:
                        # FSDP2: this module's direction, gathered only while its contribution is computed;
                        # float32 products also under torch.autocast
                        with _no_autocast(g.device):
                            cast = {local: full_tensor(d).to(self.cdtype) for local, d in directions.items()}
                            contrib = rule(module, args, self._check(g, module), cast)
                        del cast
                        for local, value in contrib.items():
                            self.add(local_dirs[local][0], value)

                    leaves[0].register_hook(on_grad)
                else:
                    full = {local: full_tensor(d) for local, d in directions.items()}
                    tangents = fallback_tangents(module, args, kwargs, full)
                    del full
                    for k, t in enumerate(leaves):
                        if not (isinstance(t, torch.Tensor) and t.requires_grad):
                            continue
                        # a fresh node per output: its gradient is the *partial* derivative from
                        # downstream uses only, not via other outputs computed from it inside
                        t = leaves[k] = t.view_as(t)
                        changed = True

                        def on_grad_k(g: torch.Tensor, k=k, module=module) -> None:
                            delta = self._check(g, module)
                            with _no_autocast(g.device):
                                for local, tans in tangents.items():
                                    if tans[k] is not None:
                                        self.add(local_dirs[local][0], batch_sum(delta * tans[k].to(self.cdtype)))

                        t.register_hook(on_grad_k)
                return tree_unflatten(leaves, spec) if changed else None
            finally:
                self.capturing = True

        return hook


def _ghost(model, ids, am, labels, dirs, loss_fn, cdtype) -> dict[str, torch.Tensor]:
    state = _GhostPass(ids.shape[0], cdtype)
    canonical = {id(p): n for n, p in model.named_parameters()}
    handles = []
    try:
        with _eval_and_frozen(model):
            for module in model.modules():
                local_dirs = {
                    local: (canonical[id(p)], dirs[canonical[id(p)]])
                    for local, p in module.named_parameters(recurse=False)
                    if canonical.get(id(p)) in dirs
                }
                if local_dirs:
                    # prepend: before FSDP2's post-forward hook, which reshards a module wrapped on its
                    # own (e.g. the input embedding) and would leave the fallback sharded weights
                    handles.append(module.register_forward_hook(state.make_hook(local_dirs), with_kwargs=True,
                                                                prepend=True))
            with torch.enable_grad():
                state.capturing = True
                logits = model_logits(model, ids, am)  # (B, T, V)
                state.capturing = False  # e.g. checkpoint recomputation during backward
                total = _check_values(loss_fn(logits, labels), ids.shape[0]).sum()
                del logits
                if total.requires_grad:
                    torch.autograd.grad(total, state.leaves, allow_unused=True)
    finally:
        state.capturing = False
        for h in handles:
            h.remove()
    return state.acc


def _loop(model, ids, am, labels, dirs, loss_fn, cdtype) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    names = list(dirs)
    plist = [params[n] for n in names]
    rows: list[list[torch.Tensor]] = []
    with _eval_and_frozen(model, trainable={id(p) for p in plist}), torch.enable_grad():
        for i in range(ids.shape[0]):
            logits = model_logits(model, ids[i : i + 1], am[i : i + 1])  # (1, T, V)
            f_i = _check_values(loss_fn(logits, labels[i : i + 1]), 1).sum()
            grads = torch.autograd.grad(f_i, plist, allow_unused=True)
            zero = torch.zeros((), dtype=cdtype, device=ids.device)
            rows.append([zero if g is None else (g.to(cdtype) * dirs[n]).sum() for n, g in zip(names, grads)])
    return {n: torch.stack([r[j] for r in rows]) for j, n in enumerate(names)}  # name -> (N,)


def _vmap_token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Same values as :func:`geffect.losses.token_logprobs` summed per row, without in-place writes."""
    mask = labels[:, 1:] != IGNORE_INDEX  # (B, T-1)
    logp = torch.log_softmax(logits[:, :-1].to(_float(logits.dtype)), dim=-1)  # (B, T-1, V)
    picked = logp.gather(-1, labels[:, 1:].clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T-1)
    return picked * mask, mask


def _float(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _vmap_answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    lp, mask = _vmap_token_logprobs(logits, labels)
    return -lp.sum(dim=1) / mask.sum(dim=1).to(lp.dtype)  # (B,)


def _vmap_answer_logprob(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _vmap_token_logprobs(logits, labels)[0].sum(dim=1)  # (B,)


_VMAP_SAFE = {answer_nll: _vmap_answer_nll, answer_logprob: _vmap_answer_logprob}


def _func(model, ids, am, labels, dirs, loss_fn, cdtype, chunk_size: int) -> dict[str, torch.Tensor]:
    # (B, T) right padding: each row of the mask is non-increasing (ones, then zeros)
    if bool((am[:, 1:] > am[:, :-1]).any()):
        raise ValueError("engine='func' drops the attention mask and needs right-padded batches; use engine='ghost'")
    params = dict(model.named_parameters())
    diff = {n: params[n].detach() for n in dirs}
    const = {n: p.detach() for n, p in params.items() if n not in dirs}

    def f_single(p: dict[str, torch.Tensor], ids_i: torch.Tensor, labels_i: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, {**const, **p}, (), _call_kwargs(model, ids_i[None], None))
        logits = _extract_logits(out)  # (1, T, V)
        return loss_fn(logits, labels_i[None])[0]

    if loss_fn in _VMAP_SAFE:
        if loss_fn is answer_nll and bool((answer_mask(labels).sum(dim=1) == 0).any()):
            raise ValueError("an instance has no answer tokens (all labels -100); its risk is undefined")
        loss_fn = _VMAP_SAFE[loss_fn]
    per_sample = vmap(grad(f_single), in_dims=(None, 0, 0))
    parts: dict[str, list[torch.Tensor]] = {n: [] for n in dirs}
    config = getattr(model, "config", None)
    pad_id = getattr(config, "pad_token_id", None)
    try:
        if pad_id is not None:  # HF's "padding but no attention mask" check is data-dependent
            config.pad_token_id = None
        with _eval_and_frozen(model):
            for start in range(0, ids.shape[0], chunk_size):
                g = per_sample(diff, ids[start : start + chunk_size], labels[start : start + chunk_size])
                for n, d in dirs.items():  # g[n]: (chunk, *param.shape)
                    parts[n].append((g[n].to(cdtype) * d).flatten(1).sum(1))  # (chunk,)
                del g
    finally:
        if pad_id is not None:
            config.pad_token_id = pad_id
    return {n: torch.cat(v) for n, v in parts.items()}
