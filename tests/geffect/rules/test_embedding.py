"""Ghost rule of ``nn.Embedding`` against the micro-batch reference (tests/geffect/rules/rule_harness.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from rule_harness import SHAPE_IDS, SHAPES, check_rule, padding

VOCAB, PAD = 11, 0


def tokens(B: int, T: int | None, pad: torch.Tensor | None, *, seed: int = 0) -> torch.Tensor:
    """Random token ids, (B,) when ``T`` is None, else (B, T); the pad token at padded positions,
    and once in instance 0, so that a ``padding_idx`` row is always looked up."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (B,) if T is None else (B, T), generator=g)
    if pad is not None:
        ids[pad] = PAD
    if B and T is not None and T > 1:
        ids[0, 0] = PAD
    return ids


@pytest.mark.parametrize("B,T,padded", SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("padding_idx", [None, PAD])
def test_embedding_rule_matches_micro_batches(B, T, padded, padding_idx):
    torch.manual_seed(0)
    layer = nn.Embedding(VOCAB, 5, padding_idx=padding_idx).double()
    pad = padding(B, T, padded)
    check_rule(layer, (tokens(B, T, pad),), pad=pad)


def test_repeated_tokens_add_up():
    """A token used twice by one instance contributes both uses (the per-instance gradient row is a sum)."""
    torch.manual_seed(0)
    check_rule(nn.Embedding(VOCAB, 4).double(), (torch.tensor([[3, 3, 3, 5], [5, 5, 1, 3]]),))
