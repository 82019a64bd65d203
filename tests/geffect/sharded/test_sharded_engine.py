"""The ghost engine on FSDP2-sharded models: two CPU processes (torchrun, gloo) give the same
per-instance, per-parameter inner products as the one-process loop reference.

The driver (tests/geffect/sharded/sharded_engine_driver.py) shards a float64 tiny untied Llama in four layouts
(decoder blocks only; accelerate's layout with the input embedding on its own and the final
norm + LM head as one unit; every RMSNorm on its own, once with its rule and once through the
fallback) and gives each rank its own rows. The layouts with modules wrapped on their own are
the ones that broke: FSDP2 frees such a module's weights in its post-forward hook, and its
wrapper class (``FSDPEmbedding``) hid the embedding's rule.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geffect.engine import per_instance_dots  # noqa: E402
from sharded_attribution_common import calibration, tiny_model  # noqa: E402
from sharded_engine_driver import LAYOUTS, direction  # noqa: E402

pytestmark = pytest.mark.slow  # two torchrun processes (~15 s)

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded-engine")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE / "sharded_engine_driver.py"), str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    results = torch.load(out / "results.pt", weights_only=False)
    assert results["world"] == 2
    return results


@pytest.fixture(scope="module")
def reference():
    model = tiny_model()
    groups = {n: [n] for n, _ in model.named_parameters()}
    dots = per_instance_dots(model, calibration()[0][0], direction(model), groups=groups, engine="loop")
    return list(groups), dots


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sharded_ghost_matches_one_process_loop(sharded, reference, layout):
    names, ref = reference
    got = sharded[layout]
    assert got["names"] == names
    assert got["dots"].dtype == torch.float64 and got["dots"].shape == ref.shape == (3, len(names))
    for j, name in enumerate(names):  # every parameter on its own, so none can hide behind a large one
        err = float((got["dots"][:, j] - ref[:, j]).norm() / ref[:, j].norm())
        assert err < 1e-10, f"{layout} {name}: rel err {err:.2e}"


def test_fsdp_wrapper_class_keeps_the_rule(sharded):
    """fully_shard swaps the module's class for FSDP<class>; the exact-type rule lookup sees through it
    (else the embedding would go through the slower forward-mode fallback)."""
    assert sharded["embedding_rule"] == ("FSDPEmbedding", True)


def test_layouts_exercise_the_rule_and_the_fallback(sharded):
    assert sharded["norms_rule"] is True and sharded["fallback_norms_rule"] is False


def test_tracker_on_a_one_process_fsdp2_model(tmp_path):
    """FSDP2 with one rank: G-effects and PG-effects (the probe-risk gradient is a sharded backward)
    equal the unsharded model's, with all rows in one pass and two rows per pass."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           str(HERE / "fsdp_one_process_driver.py"), str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stderr\n{proc.stderr[-6000:]}"
    errors = torch.load(tmp_path / "errors.pt")
    assert set(errors) == {None, 2} and all(e < 1e-12 for e in errors.values()), errors
