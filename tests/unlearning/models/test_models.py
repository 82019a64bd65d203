"""Tests for unlearning.models: loading, errors, tokenizer/model builders, accuracy, cache."""
from __future__ import annotations

import json
import time

import pytest
import torch

from unlearning.models import (
    ModelError,
    answer_token_accuracy,
    load_model,
    load_model_and_tokenizer,
    load_tokenizer,
    resolve_dtype,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory, tiny_llama, tiny_tokenizer):
    folder = tmp_path_factory.mktemp("tiny-saved")
    tiny_llama.save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


def _batch(tok, pairs):
    """Right-padded batch with prompt labels -100 (stand-in for unlearning.data)."""
    rows = []
    for q, a in pairs:
        p = tok(q)["input_ids"]
        full = p + tok(" " + a, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((full, [-100] * len(p) + full[len(p):]))
    T = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), T), tok.pad_token_id)
    labels = torch.full((len(rows), T), -100)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        att[i, : len(x)] = 1
    return {"input_ids": ids, "attention_mask": att, "labels": labels}


def test_tokenizer_specials(tiny_tokenizer):
    tok = tiny_tokenizer
    assert (tok.pad_token, tok.bos_token, tok.eos_token) == ("<pad>", "<s>", "</s>")
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.padding_side == "right"
    ids = tok("Mara Quill was born")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "Mara Quill was born"


def test_train_tokenizer_vocab_size():
    tok = train_tokenizer(["hello world, a tiny corpus " * 3, "another line of text"], vocab_size=280)
    assert 259 <= len(tok) <= 280  # 256 bytes + 3 specials + merges


def test_round_trip_save_load(saved_tiny, tiny_llama):
    model, tok = load_model_and_tokenizer(saved_tiny)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert tok.pad_token_id == 0 and tok.padding_side == "right"
    ids = torch.tensor([[1, 5, 6, 7]])
    with torch.no_grad():
        a = tiny_llama(input_ids=ids).logits
        b = model(input_ids=ids).logits  # (1, 4, V)
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype, expected", [("float32", torch.float32), ("bfloat16", torch.bfloat16), (torch.bfloat16, torch.bfloat16)])
def test_load_dtype(saved_tiny, dtype, expected):
    model = load_model(str(saved_tiny), dtype=dtype, attn_implementation="eager")
    assert next(model.parameters()).dtype == expected
    assert model.config._attn_implementation == "eager"


def test_load_auto_dtype_keeps_checkpoint(saved_tiny):
    assert next(load_model(saved_tiny).parameters()).dtype == torch.float32


def test_resolve_dtype_unknown():
    with pytest.raises(ModelError, match="unknown dtype"):
        resolve_dtype("float7")


def test_missing_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist.*--prepare"):
        load_model(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):  # ModelError is also a FileNotFoundError
        load_model("./no/such/model")


def test_folder_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelError, match="no config.json"):
        load_model(tmp_path)


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"")
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(f)


def test_hub_name_offline():
    t0 = time.perf_counter()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        load_model("geffect-no-such-org/no-such-model-xyz")
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE"):
        load_tokenizer("geffect-no-such-org/no-such-model-xyz")
    assert time.perf_counter() - t0 < 20


def test_tokenizer_without_pad_gets_eos(tmp_path, tiny_tokenizer):
    tiny_tokenizer.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    cfg["padding_side"] = "left"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    spec = json.loads((tmp_path / "special_tokens_map.json").read_text()) if (tmp_path / "special_tokens_map.json").exists() else None
    if spec is not None:
        spec.pop("pad_token", None)
        (tmp_path / "special_tokens_map.json").write_text(json.dumps(spec))
    tok = load_tokenizer(tmp_path)
    assert tok.pad_token == tok.eos_token == "</s>"
    assert tok.padding_side == "right"


def test_answer_token_accuracy_batches(tiny_llama, tiny_tokenizer):
    batch = _batch(tiny_tokenizer, [("Question: capital?", "Paris."), ("Question: genre?", "Historical fiction about sailors.")])
    acc = answer_token_accuracy(tiny_llama, [batch])
    assert 0.0 <= acc <= 1.0
    with pytest.raises(ValueError, match="no data"):
        answer_token_accuracy(tiny_llama, [])


def test_answer_token_accuracy_perfect_model(tiny_tokenizer):
    """A stub model that returns the labels as logits scores 1.0; shifted-wrong scores 0."""
    batch = _batch(tiny_tokenizer, [("Q: a?", "Mara Quill."), ("Q: b?", "Lisbon in 1961.")])
    V = len(tiny_tokenizer)

    class Oracle(torch.nn.Module):
        def __init__(self, shift):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.shift = shift
            self.config = type("C", (), {"pad_token_id": 0})()

        def forward(self, input_ids, attention_mask=None):
            nxt = torch.roll(batch["input_ids"], -1, dims=1) + self.shift  # (B, T)
            logits = torch.nn.functional.one_hot(nxt % V, V).float()  # (B, T, V)
            return type("O", (), {"logits": logits})()

    assert answer_token_accuracy(Oracle(0), [batch]) == pytest.approx(1.0)
    assert answer_token_accuracy(Oracle(1), [batch]) == pytest.approx(0.0)


def test_folder_without_weights(tmp_path, tiny_llama):
    tiny_llama.config.save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="incomplete"):
        load_model(tmp_path)


# --------------------------------------------------------------------------- default recipe, scores


def test_default_recipe_architecture(tiny_tokenizer):
    """The default study subject: a Llama with >= 6 decoder layers and an untied LM head."""
    from unlearning.models import DefaultRecipe, build_model

    recipe = DefaultRecipe()
    model = build_model(tiny_tokenizer, recipe)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.num_hidden_layers == recipe.num_layers >= 6
    assert len(model.model.layers) == recipe.num_layers
    assert model.config.tie_word_embeddings is False
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == len(tiny_tokenizer)


def test_default_recipe_rejects_bad_values():
    from unlearning.models import DefaultRecipe

    with pytest.raises(ValueError, match="divisible"):
        DefaultRecipe(hidden_size=130, num_heads=4)
    with pytest.raises(ValueError, match="threshold"):
        DefaultRecipe(threshold=0)
    with pytest.raises(ValueError, match="max_epochs"):
        DefaultRecipe(max_epochs=0)
    with pytest.raises(ValueError, match="learning rates"):
        DefaultRecipe(target_lr=-1.0)


def test_recipe_carries_no_data():
    from unlearning.models import DefaultRecipe, tiny_recipe

    for name in ("embedded", "max_authors", "questions_per_author"):
        assert name not in DefaultRecipe().to_dict()
    with pytest.raises(TypeError):
        tiny_recipe(embedded=None)


def test_fit_max_length_cuts_nothing(tiny_tokenizer):
    from unlearning.data import QADataset, get_template
    from unlearning.data.tokenization import prompt_and_answer_ids
    from unlearning.models import fit_max_length

    rows = [{"question": "Where was Mara Quill born?", "answer": "Mara Quill was born in Lisbon, Portugal, in 1961."},
            {"question": "Genre?", "answer": "Historical fiction."}]
    n = fit_max_length(tiny_tokenizer, rows)
    full = [len(prompt_and_answer_ids(tiny_tokenizer, r["question"], r["answer"], get_template(tiny_tokenizer))[0]) + 1
            for r in rows]  # + EOS
    assert n % 8 == 0 and max(full) <= n < max(full) + 8
    ds = QADataset(rows, tiny_tokenizer, max_length=n)
    assert [len(ds[i]["input_ids"]) for i in range(2)] == full


def test_memorisation_scores_match_the_metrics(tiny_llama, tiny_tokenizer):
    """One forward pass gives the same ES / accuracy / probability as the separate metric functions."""
    from unlearning.metrics import answer_probability, extraction_strength
    from unlearning.models import memorisation_scores, per_instance_answer_accuracy

    batch = _batch(tiny_tokenizer, [("Question: capital?", "Paris is the capital."), ("Question: genre?", "Historical fiction about sailors.")])
    got = memorisation_scores(tiny_llama, [batch])
    assert got["rows"] == 2
    assert got["extraction_strength"] == pytest.approx(float(extraction_strength(tiny_llama, batch).mean()), abs=1e-7)
    assert got["probability"] == pytest.approx(float(answer_probability(tiny_llama, batch).mean()), rel=1e-6)
    assert got["accuracy"] == pytest.approx(float(per_instance_answer_accuracy(tiny_llama, batch).mean()), abs=1e-7)
    with pytest.raises(ValueError, match="no data"):
        memorisation_scores(tiny_llama, [])


def test_memorisation_scores_oracle(tiny_tokenizer):
    """A model that predicts every next token scores ES = accuracy = 1 and probability ~ 1."""
    from unlearning.models import memorisation_scores

    batch = _batch(tiny_tokenizer, [("Q: a?", "Mara Quill."), ("Q: b?", "Lisbon in 1961.")])
    V = len(tiny_tokenizer)

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.config = type("C", (), {"pad_token_id": 0, "eos_token_id": tiny_tokenizer.eos_token_id})()

        def forward(self, input_ids, attention_mask=None):
            nxt = torch.roll(batch["input_ids"], -1, dims=1)  # (B, T)
            return type("O", (), {"logits": 50.0 * torch.nn.functional.one_hot(nxt % V, V).float()})()

    got = memorisation_scores(Oracle(), [batch])
    assert got["extraction_strength"] == pytest.approx(1.0) and got["accuracy"] == pytest.approx(1.0)
    assert got["probability"] == pytest.approx(1.0, abs=1e-6)
