"""geffect.masking.storage: safetensors files written atomically, read back, checked against a model."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import geffect.masking as masking
from geffect.masking import check_mask, load_mask, save_mask, storage, weight_mask
from masking_common import equal, random_scores, tiny_model, total


def test_mask_file_is_plain_safetensors(tmp_path):
    """The streamed writer produces a standard safetensors file (read back by safetensors itself)."""
    from safetensors.torch import load_file

    m = weight_mask(random_scores(2), 0.4)
    m["empty"] = torch.zeros((0, 3), dtype=torch.bool)
    path = save_mask(m, tmp_path / "m.safetensors", metadata={"note": "x"})
    raw = load_file(str(path))
    assert set(raw) == set(m) and all(raw[n].dtype == torch.uint8 and torch.equal(raw[n].bool(), m[n]) for n in m)
    meta = masking.mask_metadata(path)
    assert meta["kept"] == str(total(m)) and meta["total"] == str(sum(t.numel() for t in m.values()))
    assert meta["note"] == "x" and meta["format"] == masking.MASK_FORMAT


def test_save_load_roundtrip(tmp_path):
    model = tiny_model()
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    m = weight_mask(scores, 0.3)
    path = save_mask(m, tmp_path / "sub" / "mask.safetensors", metadata={"method": "magnitude", "density": 0.3})
    back = load_mask(path)
    assert equal(m, back)
    assert masking.mask_metadata(path)["method"] == "magnitude"
    assert check_mask(back, model, strict=True) == []
    with pytest.raises(FileNotFoundError, match="no mask file"):
        load_mask(tmp_path / "missing.safetensors")
    wrong = dict(back)
    wrong["model.norm.weight"] = torch.ones(3, dtype=torch.bool)
    wrong["not.a.param"] = torch.ones(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="shape mismatches.*|names not in the model"):
        check_mask(wrong, model)
    partial = {n: back[n] for n in list(back)[:2]}
    assert len(check_mask(partial, model)) == len(back) - 2
    with pytest.raises(ValueError, match="not covered"):
        check_mask(partial, model, strict=True)


def test_save_mask_is_atomic(tmp_path, monkeypatch):
    """A writer that dies half-way leaves the previous mask file intact and no temporary file."""
    m = {"w": torch.tensor([True, False, True])}
    path = save_mask(m, tmp_path / "mask.safetensors", metadata={"density": torch.tensor(0.5)})
    assert masking.mask_metadata(path)["density"] == "0.5"  # non-string metadata stored as JSON

    def torn_write(filename, *args):
        Path(filename).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(storage, "_write_safetensors", torn_write)
    with pytest.raises(OSError, match="disk full"):
        save_mask({"w": torch.tensor([False, False, False])}, path)
    assert equal(load_mask(path), m)
    assert [f.name for f in tmp_path.iterdir()] == ["mask.safetensors"]
