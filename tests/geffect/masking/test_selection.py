"""geffect.masking.selection: exact counts, deterministic ties, streamed radix thresholding, scopes."""
from __future__ import annotations

import pytest
import torch

from geffect.groups import parameter_groups
from geffect.masking import mask_summary, selection, weight_mask
from masking_common import DENSITIES, equal, random_scores, reference_mask, tiny_model, total


@pytest.mark.parametrize("chunk,max_candidates", [(1 << 22, 1 << 24), (61, 1 << 24), (61, 0)])
@pytest.mark.parametrize("kind", ["random", "quantised", "all_equal", "zeros", "negative"])
def test_global_matches_full_sort(monkeypatch, chunk, max_candidates, kind):
    monkeypatch.setattr(selection, "_CHUNK", chunk)  # 61: 3 chunks, ties straddle them
    monkeypatch.setattr(selection, "_MAX_CANDIDATES", max_candidates)  # 0 forces the third pass
    scores = random_scores()
    if kind == "quantised":
        scores = {n: (s * 4).floor() for n, s in scores.items()}  # heavy ties
    elif kind == "all_equal":
        scores = {n: torch.full_like(s, 0.5) for n, s in scores.items()}
    elif kind == "zeros":  # magnitude of a weight set with many exact zeros (and -0.0)
        scores = {n: (s - 0.6).clamp_min(0) * torch.where(s > 0.3, 1.0, -1.0) for n, s in scores.items()}
        scores = {n: s.abs() if i % 2 else s.clamp_min(0) for i, (n, s) in enumerate(scores.items())}
    elif kind == "negative":  # includes -0.0, which must tie with +0.0
        scores = {n: ((s - 0.5) * 8).round() / 8 for n, s in scores.items()}
        scores["t0"][0, :3] = torch.tensor([-0.0, 0.0, -0.0])
    N = sum(s.numel() for s in scores.values())
    for density in DENSITIES + [0.37, 1 / N]:
        m = weight_mask(scores, density)
        assert total(m) == round(density * N)
        assert all(m[n].dtype == torch.bool and m[n].shape == scores[n].shape for n in scores)
        assert equal(m, reference_mask(scores, round(density * N)))


@pytest.mark.parametrize("chunk,max_candidates", [(1 << 22, 1 << 24), (61, 1 << 24), (61, 0), (7, 3)])
@pytest.mark.parametrize("kind", ["close", "quantised", "negative"])
def test_float64_scores_rank_in_float64(monkeypatch, chunk, max_candidates, kind):
    """float64 scores are ranked on their float64 values (int64 radix keys, four 16-bit digits):
    values that round to the same float32 are still told apart, ties still go by position."""
    monkeypatch.setattr(selection, "_CHUNK", chunk)
    monkeypatch.setattr(selection, "_MAX_CANDIDATES", max_candidates)
    base = {n: s.double() for n, s in random_scores(7).items()}
    if kind == "close":  # distinct float64 values, many equal after rounding to float32
        scores = {n: 1.0 + (s * 64).floor() * 1e-12 + s * 1e-14 for n, s in base.items()}
        flat32 = torch.cat([s.reshape(-1).float() for s in scores.values()])
        assert flat32.unique().numel() < flat32.numel() // 4
    elif kind == "quantised":
        scores = {n: (s * 5).floor() / 3 for n, s in base.items()}
    else:
        scores = {n: ((s - 0.5) * 8).round() / 8 - 1e-13 * (s > 0.5) for n, s in base.items()}
        scores["t0"][0, :2] = torch.tensor([-0.0, 0.0], dtype=torch.float64)
    N = sum(s.numel() for s in scores.values())
    for density in DENSITIES + [0.37, 1 / N]:
        m = weight_mask(scores, density)
        assert total(m) == round(density * N)
        assert equal(m, reference_mask(scores, round(density * N)))
    if kind == "close":  # ranking the float32 roundings would differ
        s32 = {n: s.float() for n, s in scores.items()}
        assert not equal(weight_mask(scores, 0.37), weight_mask(s32, 0.37))


def test_all_equal_keeps_first_positions():
    scores = {"a": torch.ones(4), "b": torch.ones(2, 3)}
    m = weight_mask(scores, 0.5)  # 5 of 10
    assert m["a"].all() and m["b"].flatten().tolist() == [True, False, False, False, False, False]


def test_deterministic_and_float64_input():
    s = random_scores(3)
    assert equal(weight_mask(s, 0.3), weight_mask(s, 0.3))
    s64 = {n: t.double() for n, t in s.items()}
    assert equal(weight_mask(s64, 0.3), weight_mask(s, 0.3))


@pytest.mark.parametrize("kind", ["random", "all_equal"])
def test_layer_scope_counts(kind):
    scores = random_scores(5)
    if kind == "all_equal":
        scores = {n: torch.zeros_like(s) for n, s in scores.items()}
    groups = {"g0": ["t0", "t1"], "g1": ["t2", "t3"], "g2": ["t4"]}
    N = sum(s.numel() for s in scores.values())
    for density in DENSITIES + [0.33]:
        m = weight_mask(scores, density, scope="layer", groups=groups)
        assert total(m) == round(density * N)
        for names in groups.values():
            n_g = sum(scores[n].numel() for n in names)
            kept = sum(int(m[n].sum()) for n in names)
            assert int(density * n_g) <= kept <= -int(-density * n_g // 1)  # floor .. ceil
            sub = {n: scores[n] for n in names}
            assert equal({n: m[n] for n in names}, reference_mask(sub, kept))


def test_layer_scope_with_model_groups():
    model = tiny_model()
    scores = {n: p.detach().abs() for n, p in model.named_parameters()}
    m = weight_mask(scores, 0.5, scope="layer", groups=model)
    N = sum(s.numel() for s in scores.values())
    assert total(m) == round(0.5 * N)
    summary = mask_summary(m, model)
    groups = summary[summary.view == "group"]
    assert set(groups.name) == set(parameter_groups(model))
    assert ((groups.fraction - 0.5).abs() < 0.02).all()
    with pytest.raises(ValueError, match="needs groups"):
        weight_mask(scores, 0.5, scope="layer")


def test_row_and_tensor_scope():
    s = {"w": torch.tensor([[3.0, 1.0, 2.0, 2.0], [0.0, 0.0, 0.0, 5.0]]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    m = weight_mask(s, 0.5, scope="row")
    assert m["w"].tolist() == [[True, False, True, False], [True, False, False, True]]
    assert m["b"].tolist() == [False, False, True, True]
    t = weight_mask(s, 0.25, scope="tensor")
    assert [int(t[n].sum()) for n in s] == [2, 1]


def test_invalid_inputs():
    s = random_scores()
    with pytest.raises(ValueError, match="density"):
        weight_mask(s, 1.5)
    with pytest.raises(ValueError, match="scope"):
        weight_mask(s, 0.5, scope="bogus")
    s["t0"][0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        weight_mask(s, 0.5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_row_scope_matches_a_per_row_sort(dtype):
    """Every row keeps round(density·n_cols) of its highest scores, ties to the lower column (a 1-D
    tensor is one row), against a plain per-row sorted() reference on heavily tied scores."""
    scores = {n: ((s * 4).floor() / 4).to(dtype) for n, s in random_scores(11).items()}
    for density in DENSITIES + [0.37]:
        m = weight_mask(scores, density, scope="row")
        for n, s in scores.items():
            rows = s.reshape(1, -1) if s.dim() <= 1 else s.reshape(s.shape[0], -1)  # (R, C)
            k = round(density * rows.shape[1])
            want = torch.zeros(rows.shape, dtype=torch.bool)
            for r, row in enumerate(rows.tolist()):
                for c in sorted(range(len(row)), key=lambda c: (-row[c], c))[:k]:
                    want[r, c] = True
            assert torch.equal(m[n].reshape(want.shape), want), (n, density)
