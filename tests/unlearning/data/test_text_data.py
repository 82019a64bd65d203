"""Raw-text chunking (MUSE packing) and every registered objective on text batches."""
from __future__ import annotations

import pytest
import torch

from geffect.losses import IGNORE_INDEX
from unlearning import objectives
from unlearning.data import DataError, TextChunkDataset, build_text_unlearning_data, chunk_token_stream, muse_texts
from unlearning.data.embedded import idk_answers


@pytest.fixture(scope="module")
def tok():
    from unlearning.models import train_tokenizer

    return train_tokenizer(muse_texts("embedded", "forget") + muse_texts("embedded", "retain1"), vocab_size=400)


@pytest.fixture(scope="module")
def model(tok):
    from unlearning.models import DefaultRecipe, build_model

    recipe = DefaultRecipe(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=64, seed=0)
    return build_model(tok, recipe).double().eval()


# --------------------------------------------------------------------------- chunk boundaries
def test_chunk_token_stream_exact_boundaries():
    ids = list(range(10, 21))  # 11 stream tokens
    keep = chunk_token_stream(ids, 5, bos_token_id=1, last_chunk="keep")
    assert [c for c, _, _ in keep] == [[1, 10, 11, 12, 13], [1, 14, 15, 16, 17], [1, 18, 19, 20]]
    assert [(s, e) for _, s, e in keep] == [(0, 4), (4, 8), (8, 11)]
    rotate = chunk_token_stream(ids, 5, bos_token_id=1, last_chunk="rotate")
    assert rotate[-1][0] == [1, 18, 19, 20, 1]  # MUSE: the first chunk (its BOS too) appended, then cut
    assert [c for c, _, _ in chunk_token_stream(ids, 5, bos_token_id=1, last_chunk="drop")] == keep_chunks(keep)[:2]
    no_bos = chunk_token_stream(ids, 4, bos_token_id=None)
    assert [c for c, _, _ in no_bos] == [[10, 11, 12, 13], [14, 15, 16, 17], [18, 19, 20]]
    exact = chunk_token_stream(list(range(8)), 5, bos_token_id=1)  # 8 = 2 x 4: no empty last chunk
    assert [c for c, _, _ in exact] == [[1, 0, 1, 2, 3], [1, 4, 5, 6, 7]]
    with pytest.raises(DataError, match="last_chunk"):
        chunk_token_stream(ids, 5, bos_token_id=1, last_chunk="wrap")
    with pytest.raises(DataError, match="max_length"):
        chunk_token_stream(ids, 1, bos_token_id=1)


def keep_chunks(triples):
    return [c for c, _, _ in triples]


def test_concat_packing_matches_muse_reference(tok):
    """MUSE: join documents with '\\n\\n', tokenise once without special tokens, pieces of max_len - 1 + BOS."""
    texts = muse_texts("embedded", "forget")[:5]
    ds = TextChunkDataset(texts, tok, max_length=48)
    stream = tok("\n\n".join(texts), add_special_tokens=False)["input_ids"]
    expected = [[tok.bos_token_id] + stream[i : i + 47] for i in range(0, len(stream), 47)]
    assert ds.chunks == expected
    assert ds.num_tokens == sum(len(c) - 1 for c in expected)
    # every document is covered, in order, and a chunk spanning a boundary lists both documents
    covered = sorted({d for docs in ds.documents for d in docs})
    assert covered == list(range(5))
    assert all(list(docs) == sorted(docs) for docs in ds.documents)
    item = ds[1]
    assert torch.equal(item["labels"], item["input_ids"]) and item["attention_mask"].all() and item["index"] == 1


def test_document_packing_and_min_chars(tok):
    texts = ["short", *muse_texts("embedded", "retain1")[:3]]
    ds = TextChunkDataset(texts, tok, max_length=40, packing="document", min_chars=10)
    assert ds.texts == texts[1:]
    expected, docs = [], []
    for d, t in enumerate(texts[1:]):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        for i in range(0, len(ids), 39):
            expected.append([tok.bos_token_id] + ids[i : i + 39])
            docs.append((d,))
    assert ds.chunks == expected and ds.documents == docs
    with pytest.raises(DataError, match="packing"):
        TextChunkDataset(texts, tok, packing="stream")
    with pytest.raises(DataError, match="min_chars"):
        TextChunkDataset(["a", "b"], tok, min_chars=5)


def test_collated_text_batch_labels(tok):
    data = build_text_unlearning_data(muse_texts("embedded", "forget")[:3], muse_texts("embedded", "retain1")[:3],
                                      tok, max_length=64, seed=0)
    batch = data.collator([data.train[i] for i in range(len(data.train))])
    f = batch["forget"]
    lengths = [len(c) for c in data.forget.chunks]
    assert f["input_ids"].shape == (len(lengths), max(lengths))
    for b, L in enumerate(lengths):
        assert torch.equal(f["labels"][b, :L], f["input_ids"][b, :L])  # every token is a target
        assert (f["labels"][b, L:] == IGNORE_INDEX).all() and (f["attention_mask"][b, L:] == 0).all()
    assert set(batch) == {"forget", "retain"}


# --------------------------------------------------------------------------- objectives on text
@pytest.fixture(scope="module")
def text_inputs(tok):
    data = build_text_unlearning_data(
        muse_texts("embedded", "forget")[:4], muse_texts("embedded", "retain1")[:4], tok,
        max_length=64, seed=0, idk_answers=idk_answers(),
    )
    return data, data.collator([data.train[i] for i in range(4)])


def _kwargs(name):
    if name == "rmu":
        return {"layer": 0}
    return {}


@pytest.mark.parametrize("name", objectives.available())
def test_every_objective_runs_on_text(name, model, text_inputs):
    data, inputs = text_inputs
    obj = objectives.get(name, **_kwargs(name))
    ref = model if obj.needs_reference else None
    model.zero_grad(set_to_none=True)
    out = obj(model, inputs, ref_model=ref)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    if out.token_weights is not None:  # weights live on the document tokens, never on padding / column 0
        labels = inputs["forget"]["labels"]
        valid = labels != IGNORE_INDEX
        valid[:, 0] = False
        assert (out.token_weights[~valid] == 0).all()
        assert (out.token_weights[valid] != 0).any()


def test_ga_on_text_is_minus_token_mean_nll(model, text_inputs):
    """Slow reference: −(1/|T|) Σ log p over every chunk token after the first, padding excluded."""
    _, inputs = text_inputs
    out = objectives.get("ga")(model, inputs)
    batch = inputs["forget"]
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    total, n = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(1, logits.shape[1]):
            if int(batch["attention_mask"][b, t]) == 0:
                continue
            total += float(torch.log_softmax(logits[b, t - 1], -1)[batch["input_ids"][b, t]])
            n += 1
    assert abs(float(out.loss.detach()) - total / n) < 1e-10 * max(1.0, abs(total / n))


def test_idk_items_on_text(tok, text_inputs):
    data, inputs = text_inputs
    idk = inputs["idk"]
    chunk_prefix = data.forget.questions[0]
    assert chunk_prefix and data.forget.chunks[0][1:3] == tok(chunk_prefix, add_special_tokens=False)["input_ids"][:2]
    refusals = set(idk_answers())
    for b in range(idk["input_ids"].shape[0]):
        L = int(idk["attention_mask"][b].sum())
        labels = idk["labels"][b, :L]
        n_prompt = int((labels == IGNORE_INDEX).sum())
        prompt = tok.decode(idk["input_ids"][b, :n_prompt], skip_special_tokens=True)
        assert prompt == data.forget.questions[b]  # the chunk's first tokens, masked
        assert int(labels[-1]) == tok.eos_token_id
        assert tok.decode(labels[n_prompt:-1]).strip() in refusals  # then a refusal, labelled
