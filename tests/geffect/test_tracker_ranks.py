"""geffect.tracker.ranks: the probe-risk gradient of a PG-effect is summed across ranks exactly once.

Two ranks are simulated in one process: the collectives are replaced by fakes that record what
is reduced and add the other rank's contribution, so the test needs no process group (the slow
torchrun tests run the real ones). A replicated (DDP) model must be summed by one all-reduce after
the last pass and never inside ``risk_gradient``; an FSDP2 model is reduced by every pass's
backward and must not be summed again. Summing twice doubles the gradient, summing never halves
it: both fail the comparison with the one-process gradient of the whole set (float64).
"""
from __future__ import annotations

import pytest
import torch

import geffect.effect as effect
import geffect.tracker.ranks as ranks
from geffect.effect import _eval_gradient, risk_gradient
from geffect.testing import random_batch, tiny_causal_lm
from geffect.tracker import RankSplit

WORLD = 2
ROWS = 5  # rank 0 holds rows 0, 2, 4; rank 1 rows 1, 3


@pytest.fixture(scope="module")
def setup():
    model = tiny_causal_lm("llama", layers=2, dtype=torch.float64)
    batch = random_batch(model.config.vocab_size, batch_size=ROWS, seed=3)
    return model, batch, risk_gradient(model, batch)


def _rel(got: dict, want: dict) -> float:
    num = sum(float((got[n] - want[n]).pow(2).sum()) for n in want)
    return (num / sum(float(w.pow(2).sum()) for w in want.values())) ** 0.5


def _as_rank(monkeypatch, rank: int) -> None:
    monkeypatch.setattr(ranks, "rank_world", lambda: (rank, WORLD))
    monkeypatch.setattr(effect, "rank_world", lambda: (rank, WORLD))


@pytest.mark.parametrize("rows_per_pass", [None, 1, 2])
def test_replicated_model_sums_once_after_the_passes(monkeypatch, setup, rows_per_pass):
    model, batch, want = setup
    monkeypatch.setattr(effect, "sum_across_ranks",
                        lambda tensors: pytest.fail("a DDP share must not be summed inside risk_gradient"))
    reduced: list[int] = []  # the rank of every all-reduce call
    sent: dict[str, torch.Tensor] = {}
    for rank in (1, 0):  # rank 1 first: its contribution is what rank 0's all-reduce adds
        _as_rank(monkeypatch, rank)

        def all_reduce(tensors, rank=rank):
            reduced.append(rank)
            if rank == 1:
                sent.update({n: t.clone() for n, t in tensors.items()})
            else:
                for n, t in tensors.items():
                    t += sent[n]

        monkeypatch.setattr(ranks, "sum_across_ranks", all_reduce)
        got = RankSplit(distributed=True, rows_per_pass=rows_per_pass).probe_gradient(model, batch, ROWS)
    assert reduced == [1, 0], "one all-reduce per rank, after the last pass"
    assert _rel(got, want) < 1e-12


@pytest.mark.parametrize("rows_per_pass", [None, 2])
def test_sharded_model_is_reduced_by_each_pass_and_not_again(monkeypatch, setup, rows_per_pass):
    model, batch, want = setup
    monkeypatch.setattr(ranks, "is_sharded", lambda m: True)
    monkeypatch.setattr(effect, "is_sharded", lambda m: True)
    monkeypatch.setattr(ranks, "sum_across_ranks", lambda tensors: pytest.fail("an FSDP2 gradient was summed twice"))
    passes = {r: -(-len(range(r, ROWS, WORLD)) // (rows_per_pass or ROWS)) for r in range(WORLD)}
    monkeypatch.setattr(ranks, "max_over_ranks", lambda count: max(passes.values()))
    shares: dict[int, list[dict[str, torch.Tensor]]] = {0: [], 1: []}

    def backward_of(rank, reduce):
        def sharded_gradient(m, fn, factor):  # the backward's reduce-scatter: factor x the mean over ranks
            local = _eval_gradient(m, lambda mm: fn(mm) * (factor / WORLD))
            shares[rank].append({n: g.clone() for n, g in local.items()})  # the caller adds into what it gets
            if not reduce:
                return local
            other = shares[1 - rank][len(shares[rank]) - 1]
            return {n: g + other[n] for n, g in local.items()}
        return sharded_gradient

    for rank, reduce in ((1, False), (0, True)):  # record rank 1's pass shares, then reduce on rank 0
        _as_rank(monkeypatch, rank)
        monkeypatch.setattr(effect, "_sharded_gradient", backward_of(rank, reduce))
        got = RankSplit(distributed=True, rows_per_pass=rows_per_pass).probe_gradient(model, batch, ROWS)
    assert len(shares[0]) == len(shares[1]) == max(passes.values()), "every rank runs the same number of passes"
    assert _rel(got, want) < 1e-12


def test_one_process_takes_the_plain_gradient(monkeypatch, setup):
    model, batch, want = setup
    monkeypatch.setattr(ranks, "sum_across_ranks", lambda tensors: pytest.fail("one process has nothing to sum"))
    for rows_per_pass in (None, 2):
        got = RankSplit(rows_per_pass=rows_per_pass).probe_gradient(model, batch, ROWS)
        assert _rel(got, want) < 1e-12
