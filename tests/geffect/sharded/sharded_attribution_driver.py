"""Driver for tests/geffect/sharded/test_sharded_attribution.py, run under ``torchrun`` (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc_per_node W tests/geffect/sharded/sharded_attribution_driver.py OUT SINGLE_MASK

Every rank shards the same float64 tiny Llama with FSDP2 (``fully_shard`` per decoder layer and
at the root), takes its own share of the calibration batches (batches r, r+W, ...: the ranks hold
different numbers of them), scores, selects and saves; rank 0 writes the gathered results to OUT
for the test to compare with one process. SINGLE_MASK is a mask file written by one process,
loaded here sharded.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geffect.masking import selection  # noqa: E402
from geffect.attribution import attribute_and_save, attribute_weights  # noqa: E402
from geffect.masking import apply_mask_to_gradients, load_mask, mask_overlap, mask_summary, save_mask, weight_mask  # noqa: E402
from sharded_attribution_common import (DENSITIES, METHODS, calibration, synthetic_scores,  # noqa: E402
                                        tiny_model)


def gathered(tensors):
    return {n: (t.full_tensor() if hasattr(t, "full_tensor") else t).cpu() for n, t in tensors.items()}


def main(out: Path, single_mask: Path) -> None:
    """Every sharded result the test compares, in one linear script (one process group, one model;
    kept as one function so that the collectives visibly run in the same order on every rank)."""
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("cpu", (world,))
    model = tiny_model()
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    forget, retain = calibration()
    mine_f, mine_r = forget[rank::world], retain[rank::world]
    results = {"world": world}

    for method in METHODS:
        scores = attribute_weights(model, mine_f, mine_r, method=method)
        assert all(type(s).__name__ == "DTensor" for s in scores.values())
        results[f"scores/{method}"] = gathered(scores)
        scope = "row" if method == "wanda" else "global"
        for density in DENSITIES:
            results[f"mask/{method}/{scope}/{density}"] = gathered(weight_mask(scores, density, scope=scope))
        results[f"mask/{method}/layer/0.3"] = gathered(weight_mask(scores, 0.3, scope="layer", groups=model))
        results[f"mask/{method}/tensor/0.3"] = gathered(weight_mask(scores, 0.3, scope="tensor"))
        mask = weight_mask(scores, 0.3, scope=scope)
        save_mask(mask, out / f"{method}.safetensors", metadata={"world": world})
        summary = mask_summary(mask, model)
        results[f"summary/{method}"] = summary.to_dict("list")
        results[f"overlap/{method}"] = mask_overlap(mask, weight_mask(scores, 0.5, scope=scope))

    # the selection alone on synthetic sharded scores with heavy ties; small chunks put chunk
    # boundaries inside runs of ties; one tensor is plain (replicated), one DTensor Replicate()
    selection._CHUNK = 5
    full = synthetic_scores()
    sharded = {}
    for n, t in full.items():
        if n == "plain":
            sharded[n] = t
        elif n == "replicated":
            sharded[n] = distribute_tensor(t, mesh, [Replicate()])
        else:
            sharded[n] = distribute_tensor(t, mesh, [Shard(0)])
    for kind in ("quantised", "float64"):
        src = sharded if kind == "quantised" else {n: t.double() for n, t in sharded.items()}
        for density in DENSITIES:
            results[f"synthetic/{kind}/{density}"] = gathered(weight_mask(src, density))
        results[f"synthetic/{kind}/row"] = gathered(weight_mask(src, 0.4, scope="row"))
    nan = {"a": distribute_tensor(torch.ones(6, 2), mesh, [Shard(0)])}
    nan["a"].to_local()[0, 0] = float("nan") if rank == world - 1 else 1.0
    try:
        weight_mask(nan, 0.5)
        results["nan"] = "no error"
    except ValueError as err:  # every rank raises, none hangs
        results["nan"] = str(err)
    selection._CHUNK = 1 << 22

    # a mask written by one process, loaded sharded like the parameters; applied to FSDP2 grads
    loaded = load_mask(single_mask, model=model)
    assert all(type(m).__name__ == "DTensor" for m in loaded.values()), {n: type(m).__name__ for n, m in loaded.items()}
    results["loaded"] = gathered(loaded)
    ids = forget[0]["input_ids"]
    model(input_ids=ids).logits.sum().backward()
    apply_mask_to_gradients(model, loaded)
    results["masked_grads"] = gathered({n: p.grad for n, p in model.named_parameters()})
    results["grads_local_rows"] = {n: p.grad.to_local().shape[0] for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)

    # only the decoder blocks sharded: embedding, final norm and head stay plain tensors whose
    # gradients FSDP2 does not reduce; their sums are all-reduced by the attribution
    partial = tiny_model()
    for layer in partial.model.layers:
        fully_shard(layer, mesh=mesh)
    scores = attribute_weights(partial, mine_f, mine_r, method="wagle")
    results["partial/plain"] = sorted(n for n, s in scores.items() if type(s).__name__ != "DTensor")
    results["partial/scores"] = gathered(scores)
    results["partial/mask"] = gathered(weight_mask(scores, 0.3))

    paths = attribute_and_save(model, mine_f, mine_r, out / "aas.safetensors", density=0.25, progress=False)
    results["aas_paths"] = {k: str(v) for k, v in paths.items()}
    if rank == 0:
        torch.save(results, out / "results.pt")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
