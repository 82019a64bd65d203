"""WAGLE attribution and masks on an FSDP2-sharded model: two CPU processes (torchrun, gloo)
give the same scores and exactly the same masks as one process, and mask files move between
world sizes 1 and 2 in both directions.

The driver (tests/geffect/sharded/sharded_attribution_driver.py) shards a float64 tiny Llama with
``fully_shard``; each rank scores its own share of the calibration batches (rank 0: forget
batches 0 and 2, rank 1: batch 1 - uneven, so one rank runs a zero-weighted pass while the
other still has data), no rank holds full scores, and the global top-k threshold is found with
all-reduced histograms. float64 makes the gradient sums of the two layouts agree to ~1e-15, so
exact mask equality is a fair requirement; the synthetic part checks the tie-breaking with
heavily tied float32 scores whose sharded and single-process values are bit-identical.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from geffect.attribution import attribute_weights  # noqa: E402
from geffect.masking import load_mask, mask_overlap, mask_summary, save_mask, weight_mask  # noqa: E402
from sharded_attribution_common import DENSITIES, METHODS, calibration, synthetic_scores, tiny_model  # noqa: E402

pytestmark = pytest.mark.slow  # two torchrun processes (~30 s on a shared 2-core machine)

REPO = Path(__file__).resolve().parents[3]
HERE = Path(__file__).resolve().parent
DRIVER = HERE / "sharded_attribution_driver.py"


def reference_mask(scores, k):
    """Full sort: descending score, ties to the lower global position (dict order, row-major)."""
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.sort(-flat, stable=True).indices[:k]] = True
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = keep[start:start + s.numel()].view(s.shape)
        start += s.numel()
    return out


def equal(a, b):
    return set(a) == set(b) and all(torch.equal(a[n].cpu(), b[n].cpu()) for n in a)


def rel_err(a, b):
    num = sum(float((a[n].double() - b[n].double()).pow(2).sum()) for n in b)
    den = sum(float(b[n].double().pow(2).sum()) for n in b)
    return (num / den) ** 0.5 if den else num ** 0.5


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    """One process: scores and masks of every method, and a mask file written at world size 1."""
    model = tiny_model()
    forget, retain = calibration()
    out = {"model": model, "dir": tmp_path_factory.mktemp("single")}
    for method in METHODS:
        scores = attribute_weights(model, forget, retain, method=method)
        out[f"scores/{method}"] = scores
    scope = "global"
    out["file"] = save_mask(weight_mask(out["scores/wagle"], 0.3, scope=scope), out["dir"] / "wagle.safetensors")
    return out


@pytest.fixture(scope="module")
def sharded(single, tmp_path_factory):
    """The torchrun run at world size 2 (gloo, CPU); its gathered results and output folder."""
    out = tmp_path_factory.mktemp("sharded")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), TOKENIZERS_PARALLELISM="false")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(DRIVER), str(out), str(single["file"])]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-6000:]}"
    results = torch.load(out / "results.pt", weights_only=False)
    assert results["world"] == 2
    return results, out


@pytest.mark.parametrize("method", METHODS)
def test_sharded_scores_match_one_process(single, sharded, method):
    results, _ = sharded
    ref = single[f"scores/{method}"]
    got = results[f"scores/{method}"]
    assert set(got) == set(ref) and all(got[n].shape == ref[n].shape for n in ref)
    expected_dtype = torch.float32 if method == "random" else torch.float64
    assert {t.dtype for t in got.values()} == {expected_dtype}
    err = rel_err(got, ref)
    assert err < 1e-12, f"{method}: rel err {err:.2e}"  # measured ~1e-16 (0 for magnitude/random)


@pytest.mark.parametrize("method", METHODS)
def test_sharded_masks_identical_to_one_process(single, sharded, method):
    results, _ = sharded
    scores = single[f"scores/{method}"]
    model = single["model"]
    scope = "row" if method == "wanda" else "global"
    for density in DENSITIES:
        ref = weight_mask(scores, density, scope=scope)
        assert equal(results[f"mask/{method}/{scope}/{density}"], ref), (method, density)
    assert equal(results[f"mask/{method}/layer/0.3"], weight_mask(scores, 0.3, scope="layer", groups=model))
    assert equal(results[f"mask/{method}/tensor/0.3"], weight_mask(scores, 0.3, scope="tensor"))
    mask = weight_mask(scores, 0.3, scope=scope)
    assert results[f"summary/{method}"] == mask_summary(mask, model).to_dict("list")
    assert results[f"overlap/{method}"] == pytest.approx(mask_overlap(mask, weight_mask(scores, 0.5, scope=scope)))


def test_sharded_selection_ties_match_full_sort(sharded):
    """Heavy ties spread over tensors, shards and chunks: the collective selection picks exactly
    the single-process top-k (lower position wins: tensor order, then row-major index)."""
    results, _ = sharded
    full = synthetic_scores()
    N = sum(t.numel() for t in full.values())
    for kind, scores in (("quantised", full), ("float64", {n: t.double() for n, t in full.items()})):
        for density in DENSITIES:
            got = results[f"synthetic/{kind}/{density}"]
            k = round(density * N)
            assert equal(got, reference_mask(scores, k)), (kind, density)
            assert equal(got, weight_mask(scores, density))
        assert equal(results[f"synthetic/{kind}/row"], weight_mask(scores, 0.4, scope="row"))
    assert "NaN" in results["nan"]  # raised on every rank (the NaN sat on the last one), no hang


def test_mask_saved_at_world_size_2_loads_at_1(single, sharded):
    _, out = sharded
    for method in METHODS:
        scope = "row" if method == "wanda" else "global"
        loaded = load_mask(out / f"{method}.safetensors")
        assert equal(loaded, weight_mask(single[f"scores/{method}"], 0.3, scope=scope)), method
    from geffect.masking import mask_metadata

    meta = mask_metadata(out / "wagle.safetensors")
    assert meta["world"] == "2" and int(meta["total"]) == sum(p.numel() for p in single["model"].parameters())


def test_mask_saved_at_world_size_1_loads_at_2(single, sharded):
    """load_mask(path, model=fsdp_model) reads each rank's rows; applied to FSDP2 gradients it zeros
    exactly the masked entries."""
    results, _ = sharded
    full = load_mask(single["file"])
    assert equal(results["loaded"], full)
    grads = results["masked_grads"]
    assert all(bool((grads[n][~full[n]] == 0).all()) for n in full)
    assert any(bool((grads[n][full[n]] != 0).any()) for n in full)
    rows = results["grads_local_rows"]
    assert rows["model.embed_tokens.weight"] == 19  # 37 rows over 2 ranks: rank 0 holds 19


def test_partly_sharded_model(single, sharded):
    """Only the decoder blocks wrapped by fully_shard: the plain embedding, norm and head are
    summed over ranks too, and treated as replicated by the selection."""
    results, _ = sharded
    assert results["partial/plain"] == ["lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"]
    ref = single["scores/wagle"]
    assert rel_err(results["partial/scores"], ref) < 1e-12
    assert equal(results["partial/mask"], weight_mask(ref, 0.3))


def test_attribute_and_save_sharded(single, sharded):
    import json

    results, _ = sharded
    paths = {k: Path(v) for k, v in results["aas_paths"].items()}
    record = json.loads(paths["json"].read_text())
    N = sum(p.numel() for p in single["model"].parameters())
    assert record["kept"] == round(0.25 * N)
    forget, retain = calibration()
    ref = weight_mask(attribute_weights(single["model"], forget, retain, method="wagle"), 0.25)
    assert equal(load_mask(paths["mask"]), ref)
    assert paths["summary"].read_text().startswith("view,name,kept,total,fraction")
