"""Driver for tests/geffect/sharded/test_sharded_engine.py, run under ``torchrun`` (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/geffect/sharded/sharded_engine_driver.py OUT

Every rank shards the same float64 tiny Llama with FSDP2 in one of three layouts, takes its own
rows of one batch (rows r, r+W, ...: uneven), and computes the ghost engine's per-instance,
per-parameter inner products with a sharded (DTensor) direction; rank 0 writes the gathered rows
to OUT for the test to compare with one process.

Layouts: ``blocks`` (each decoder layer and the root, as in the FSDP2 docs), ``accelerate``
(what ``accelerate``'s FSDP2 preparation builds for an untied model: the input embedding on its
own, each layer, the final norm with the LM head as one unit kept gathered after forward, the
root) and ``norms`` (every RMSNorm its own unit, resharded right after its forward) and ``fallback_norms``
(the same with a renamed RMSNorm class that no rule matches: the general forward-mode fallback
then meets a module whose weights FSDP2 frees when its forward ends).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Shard, distribute_tensor
from transformers.models.llama.modeling_llama import LlamaRMSNorm

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geffect.engine import per_instance_dots  # noqa: E402
from geffect.rules import get_rule  # noqa: E402
from sharded_attribution_common import calibration, tiny_model  # noqa: E402

LAYOUTS = ("blocks", "accelerate", "norms", "fallback_norms")


class FallbackRMSNorm(LlamaRMSNorm):
    """LlamaRMSNorm under another name: no rule matches it, so the forward-mode fallback runs."""


def direction(model) -> dict[str, torch.Tensor]:
    """A fixed random direction per parameter (same values on every rank and in the test)."""
    g = torch.Generator().manual_seed(2)
    return {n: torch.randn(p.shape, generator=g, dtype=p.dtype) for n, p in model.named_parameters()}


def shard(model, layout: str, mesh) -> None:
    if layout == "accelerate":
        fully_shard(model.model.embed_tokens, mesh=mesh)
    if layout in ("norms", "fallback_norms"):
        for m in model.modules():
            if isinstance(m, LlamaRMSNorm):
                if layout == "fallback_norms":
                    m.__class__ = FallbackRMSNorm
                fully_shard(m, mesh=mesh, reshard_after_forward=True)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    if layout == "accelerate":
        fully_shard([model.model.norm, model.lm_head], mesh=mesh, reshard_after_forward=False)
    fully_shard(model, mesh=mesh)


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    batch = calibration()[0][0]  # 3 rows
    mine = {k: v[rank::world] for k, v in batch.items()}
    results = {"world": world}
    for layout in LAYOUTS:
        model = tiny_model()
        full_dir = direction(model)
        shard(model, layout, mesh)
        params = dict(model.named_parameters())
        if layout == "accelerate":  # FSDPEmbedding = (FSDPModule, Embedding) keeps Embedding's rule
            embed = model.model.embed_tokens
            results["embedding_rule"] = (type(embed).__name__, get_rule(embed) is get_rule(torch.nn.Embedding(2, 2)))
        if layout in ("norms", "fallback_norms"):  # rule or fallback, as the layout intends
            results[f"{layout}_rule"] = get_rule(model.model.norm) is not None
        assert all(type(p).__name__ == "DTensor" for p in params.values()), layout
        sharded = {n: distribute_tensor(d, mesh, [Shard(0)]) for n, d in full_dir.items()}
        groups = {n: [n] for n in params}
        dots = per_instance_dots(model, mine, sharded, groups=groups)  # (rows of this rank, P)
        assert all(type(p).__name__ == "DTensor" for p in model.parameters()), f"{layout}: left gathered"
        parts = [None] * world
        dist.all_gather_object(parts, dots.cpu())
        rows = torch.zeros(batch["input_ids"].shape[0], len(groups), dtype=dots.dtype)
        for r, part in enumerate(parts):
            rows[r::world] = part
        results[layout] = {"names": list(groups), "dots": rows}
    if rank == 0:
        torch.save(results, out / "results.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
