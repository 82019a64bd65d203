"""Driver for tests/geffect/sharded/test_sharded_engine.py::test_tracker_on_a_one_process_fsdp2_model (torchrun, 1 process).

    python -m torch.distributed.run --standalone --nproc_per_node 1 tests/geffect/sharded/fsdp_one_process_driver.py OUT

FSDP2 with a single rank (a sharded model whose process group has one member): the tracker's
G-effects and PG-effects (the probe-risk gradient is then a sharded backward with one rank) equal
those of the same weights unsharded. Writes the relative errors to OUT/errors.pt.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import Shard, distribute_tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geffect import GEffectTracker  # noqa: E402
from sharded_attribution_common import calibration, tiny_model  # noqa: E402


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (1,))
    sharded, plain = tiny_model(), tiny_model()
    for layer in sharded.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(sharded, mesh=mesh)
    forget, retain = calibration()
    probes = {"forget": forget[0], "retain": retain[1]}
    g = torch.Generator().manual_seed(3)
    direction = {n: torch.randn(p.shape, dtype=p.dtype, generator=g) for n, p in plain.named_parameters()}
    results = {}
    for name, model in (("sharded", sharded), ("plain", plain)):
        d = {n: distribute_tensor(t, mesh, [Shard(0)]) for n, t in direction.items()} if name == "sharded" else direction
        for rows in (None, 2):
            tracker = GEffectTracker(out / f"{name}-{rows}", probes, distributed=True, rows_per_pass=rows)
            ge = tracker.track(1, model, d)
            pg = tracker.track_instance_effect(1, model, forget[1])
            results[name, rows] = [ge[p].matrix for p in probes] + [pg[p].matrix for p in probes]
    errors = {rows: max(float((a - b).norm() / b.norm()) for a, b in zip(results["sharded", rows], results["plain", None]))
              for rows in (None, 2)}
    torch.save(errors, out / "errors.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
