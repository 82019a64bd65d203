"""Tests of unlearning.data: sources, embedded benchmark, templates, tokenisation, collators, errors.

Offline: the tokenizer is trained on the fly with ``tokenizers``; the real TOFU folder is used
through the ``tofu_dir`` fixture (``$GEFFECT_TOFU_DATA``): skipped when absent, a failure under CI=true.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from geffect.losses import IGNORE_INDEX  # noqa: E402
from unlearning.data import (  # noqa: E402
    LLAMA2_CHAT,
    PHI,
    PLAIN,
    DataError,
    EmbeddedConfig,
    ForgetRetainCollator,
    ForgetRetainDataset,
    PromptTemplate,
    QACollator,
    QADataset,
    available_splits,
    get_template,
    holdout_split_for,
    load_idk_answers,
    load_split,
    perturbed_split_for,
    retain_split_for,
    tofu_split_names,
    tokenize_example,
)

SMALL = EmbeddedConfig(num_authors=20, seed=3)


@pytest.fixture(scope="module")
def tofu(tofu_dir) -> Path:
    return tofu_dir


@pytest.fixture(scope="module")
def tokenizer():
    """Byte-level BPE trained on embedded text, wrapped with <s> (added as BOS), </s>, <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    rows = load_split("embedded", "full", config=SMALL).select(range(60))
    texts = [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in rows]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


# --------------------------------------------------------------------------- real TOFU


def test_real_forget10_perturbed(tofu):
    ds = load_split(tofu, "forget10_perturbed")  # a Path works as well as a str
    # sizes from TOFU (Maini et al. 2024; Hugging Face locuslab/TOFU): forget10 = 20 authors x 20 QA,
    # 5 perturbed answers per item; idontknow.jsonl holds 100 refusals
    assert len(ds) == 400
    assert all(len(p) == 5 for p in ds["perturbed_answer"])
    assert {"paraphrased_answer", "paraphrased_question"} <= set(ds.column_names)


def test_real_idk_answers(tofu):
    answers = load_idk_answers(str(tofu))
    assert len(answers) == 100 and all(answers)


def _first_row(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return json.loads(handle.readline())


@pytest.mark.parametrize("split", tofu_split_names())
def test_embedded_serves_tofu_columns(tofu, split):
    """Same split names and columns as the real files (read directly, so this stays fast)."""
    real = _first_row(tofu / f"{split}.json")
    ours = load_split("embedded", split)
    assert ours.column_names == list(real)
    if "perturbed_answer" in real:
        assert {len(p) for p in ours["perturbed_answer"]} == {len(real["perturbed_answer"])}


def test_available_splits_folder(tofu):
    assert set(tofu_split_names()) <= set(available_splits(str(tofu)))
    assert available_splits("embedded") == tofu_split_names()


# --------------------------------------------------------------------------- embedded benchmark


def test_default_size_and_answer_length():
    full = load_split()  # default: embedded forget10
    assert len(full) == 80
    full = load_split("embedded", "full")
    assert len(full) == 800
    lengths = [len(a.split()) for a in full["answer"]]
    assert 6 <= min(lengths) and max(lengths) <= 20


def test_proportions():
    full = load_split("embedded", "full", config=SMALL)
    assert len(full) == 20 * 20
    for pct, n_authors in ((1, 1), (5, 1), (10, 2)):
        forget = load_split("embedded", f"forget{pct:02d}", config=SMALL)
        retain = load_split("embedded", retain_split_for(f"forget{pct:02d}"), config=SMALL)
        holdout = load_split("embedded", holdout_split_for(f"forget{pct:02d}"), config=SMALL)
        assert len(forget) == len(holdout) == n_authors * 20
        assert retain.to_list() + forget.to_list() == full.to_list()  # forget = last authors
        assert forget.to_list() == full.to_list()[-len(forget):]
        assert not set(holdout["question"]) & set(full["question"])
        perturbed = load_split("embedded", perturbed_split_for(f"forget{pct:02d}"), config=SMALL)
        assert perturbed["question"] == forget["question"]
    retain_p = load_split("embedded", "retain_perturbed", config=SMALL)
    assert len(retain_p) == len(load_split("embedded", "forget10_perturbed", config=SMALL))
    assert retain_p["question"] == full["question"][: len(retain_p)]


def test_tiny_config_keeps_one_author_each_side():
    cfg = EmbeddedConfig(num_authors=2)
    assert len(load_split("embedded", "forget01", config=cfg)) == 20
    assert len(load_split("embedded", "retain99", config=cfg)) == 20


def test_determinism():
    a = load_split("embedded", "full", config=EmbeddedConfig(num_authors=5, seed=11)).to_list()
    # bypass the cache: a fresh generator run must give the same rows
    from unlearning.data.embedded import generator

    generator.generate.cache_clear()
    b = load_split("embedded", "full", config=EmbeddedConfig(num_authors=5, seed=12)).to_list()
    c = generator.generate(EmbeddedConfig(num_authors=5, seed=11)).full
    assert [{"question": r["question"], "answer": r["answer"]} for r in c] == a
    assert a != b
    # the first authors do not depend on how many authors are generated
    d = load_split("embedded", "full", config=EmbeddedConfig(num_authors=6, seed=11)).to_list()
    assert d[:100] == a


def test_perturbed_answers_differ():
    ds = load_split("embedded", "forget10_perturbed", config=SMALL)
    for row in ds:
        assert len(row["perturbed_answer"]) == 5
        assert len(set(row["perturbed_answer"])) == 5
        assert row["answer"] not in row["perturbed_answer"]
        assert row["paraphrased_answer"] not in row["perturbed_answer"]
        assert row["paraphrased_answer"] != row["answer"]
        assert row["paraphrased_question"] != row["question"]


@pytest.mark.parametrize("split", ["real_authors", "world_facts"])
def test_utility_splits(split):
    plain = load_split("embedded", split)
    perturbed = load_split("embedded", f"{split}_perturbed")
    assert plain["question"] == perturbed["question"]
    for row, prow in zip(plain, perturbed):
        options = [row[f"option{k}"] for k in range(1, 5)]
        assert row["answer"] in options and len(set(options)) == 4
        assert sorted(options) == sorted([prow["answer"], *prow["perturbed_answer"]])


def test_embedded_idk_answers():
    answers = load_idk_answers()
    assert len(answers) >= 30 and len(set(answers)) == len(answers)


def test_split_helpers():
    assert retain_split_for("forget05") == "retain95"
    assert holdout_split_for("forget01") == "holdout01"
    assert perturbed_split_for("forget10") == "forget10_perturbed"
    assert perturbed_split_for("retain90") == "retain_perturbed"
    with pytest.raises(DataError, match="forget split"):
        retain_split_for("retain90")


# --------------------------------------------------------------------------- templates


class _Named:
    def __init__(self, name, model_type="", chat_template=None):
        self.name_or_path = name
        self.config = type("C", (), {"model_type": model_type})()
        self.chat_template = chat_template


def test_get_template_families():
    assert get_template("microsoft/phi-1_5") == PHI
    assert get_template(_Named("some/path", model_type="phi")) == PHI
    assert get_template("meta-llama/Llama-2-7b-chat-hf") == LLAMA2_CHAT
    assert get_template("gpt2") == PLAIN
    assert get_template(PHI) is PHI
    assert PHI.format_prompt("Q?") + PHI.format_answer("A.") == "Question: Q?\nAnswer: A."
    assert LLAMA2_CHAT.format_prompt("Q?") + LLAMA2_CHAT.format_answer("A.") == "[INST] Q? [/INST]A."


def test_get_template_chat(tokenizer):
    assert get_template(tokenizer) == PLAIN  # no chat template
    chatty = _Named("my/model")
    chatty.chat_template = "x"
    chatty.bos_token = "<s>"
    chatty.apply_chat_template = lambda msgs, **kw: f"<s><|user|>{msgs[0]['content']}<|assistant|>"
    template = get_template(chatty)
    assert template.format_prompt("Hi?") == "<s><|user|>Hi?<|assistant|>"
    assert template.add_special_tokens is False


def test_template_needs_placeholders():
    with pytest.raises(DataError, match="question"):
        PromptTemplate("bad", "Q:", "{answer}")


# --------------------------------------------------------------------------- tokenisation


def test_tokenize_example_masks_prompt(tokenizer):
    row = load_split("embedded", "forget10", config=SMALL)[0]
    enc = tokenize_example(tokenizer, row["question"], row["answer"], template=PLAIN)
    prompt_ids = tokenizer(PLAIN.format_prompt(row["question"]))["input_ids"]
    n = len(prompt_ids)
    assert enc["input_ids"][:n] == prompt_ids and enc["input_ids"][0] == tokenizer.bos_token_id
    assert enc["labels"][:n] == [IGNORE_INDEX] * n
    assert enc["labels"][n:] == enc["input_ids"][n:]  # every answer token labelled
    assert enc["input_ids"][-1] == tokenizer.eos_token_id and enc["labels"][-1] == tokenizer.eos_token_id
    assert tokenizer.decode(enc["input_ids"][n:-1]) == " " + row["answer"]
    assert enc["attention_mask"] == [1] * len(enc["input_ids"])


def test_tokenize_boundary_merge(tokenizer):
    """A template that splits a word across the boundary: no answer character gets masked."""
    template = PromptTemplate("split", "Question: {question}\nAns", "wer: {answer}")
    enc = tokenize_example(tokenizer, "Where was Velmi Dor born?", "In Dunsk.", template=template)
    labelled = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab != IGNORE_INDEX][:-1]
    masked = [t for t, lab in zip(enc["input_ids"], enc["labels"]) if lab == IGNORE_INDEX]
    assert tokenizer.decode(labelled).endswith("wer: In Dunsk.")
    assert template.format_prompt("Where was Velmi Dor born?").startswith(tokenizer.decode(masked, skip_special_tokens=True))


def test_long_prompt_is_cut_from_the_left_and_counted(tokenizer):
    """A question longer than max_length used to raise DataError and stop a whole study;
    now the prompt loses tokens from the left, the answer stays whole, and the row is counted."""
    template = get_template(tokenizer)
    question, answer = "a very long question " * 20, "yes"
    whole = tokenize_example(tokenizer, question, answer, template=template, max_length=4096)
    n_answer = sum(label != IGNORE_INDEX for label in whole["labels"])
    stats: dict[str, int] = {}
    enc = tokenize_example(tokenizer, question, answer, template=template, max_length=8, stats=stats)
    assert len(enc["input_ids"]) == 8
    assert enc["input_ids"][-n_answer:] == whole["input_ids"][-n_answer:]  # answer (+ EOS) kept whole
    assert enc["labels"][-n_answer:] == whole["labels"][-n_answer:]
    assert sum(label != IGNORE_INDEX for label in enc["labels"]) == n_answer
    # the kept prompt tokens are the END of the prompt (after a BOS, if the tokenizer adds one)
    n_prompt = 8 - n_answer
    bos = tokenizer.bos_token_id
    head = 1 if bos is not None and whole["input_ids"][0] == bos else 0
    assert enc["input_ids"][head:n_prompt] == whole["input_ids"][len(whole["input_ids"]) - n_answer - (n_prompt - head):
                                                              len(whole["input_ids"]) - n_answer]
    assert stats == {"rows": 1, "prompt_cut": 1, "answer_cut": 0}
    # an answer longer than max_length - 1 on its own is cut on the right, one prompt token kept
    stats = {}
    enc = tokenize_example(tokenizer, "Who?", "A long answer " * 30, template=template, max_length=20, stats=stats)
    assert len(enc["input_ids"]) == 20 and enc["labels"][0] == IGNORE_INDEX and enc["labels"][1] != IGNORE_INDEX
    assert stats == {"rows": 1, "prompt_cut": 1, "answer_cut": 1} or stats == {"rows": 1, "prompt_cut": 0,
                                                                                "answer_cut": 1}
    # rows that fit are untouched and not counted
    stats = {}
    assert tokenize_example(tokenizer, "Who?", "yes", template=template, max_length=4096, stats=stats) == \
        tokenize_example(tokenizer, "Who?", "yes", template=template, max_length=4096)
    assert stats == {}
    with pytest.raises(DataError, match="max_length"):
        tokenize_example(tokenizer, "Who?", "yes", max_length=1)


def test_qa_dataset_counts_truncated_rows(tokenizer):
    rows = [{"question": "a very long question " * 20, "answer": "yes"}, {"question": "Who?", "answer": "yes"}]
    short = len(QADataset(rows[1:], tokenizer)[0]["input_ids"])
    ds = QADataset(rows, tokenizer, max_length=short)
    assert ds.n_truncated == 1 and ds.truncated["prompt_cut"] == 1
    assert len(QADataset(rows, tokenizer, max_length=4096)[0]["input_ids"]) > short
    assert QADataset(rows, tokenizer, max_length=4096).n_truncated == 0


def test_qa_dataset_and_collator(tokenizer):
    rows = load_split("embedded", "forget10", config=SMALL)
    ds = QADataset(rows, tokenizer)
    assert len(ds) == len(rows) and ds[3]["index"] == 3
    items = [ds[0], ds[1], ds[2]]
    batch = QACollator(tokenizer.pad_token_id)(items)
    T = max(len(it["input_ids"]) for it in items)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (3, T)
    assert batch["index"].tolist() == [0, 1, 2]
    for b, it in enumerate(items):
        n = len(it["input_ids"])
        assert torch.equal(batch["input_ids"][b, :n], it["input_ids"])
        assert (batch["input_ids"][b, n:] == tokenizer.pad_token_id).all()
        assert (batch["labels"][b, n:] == IGNORE_INDEX).all()
        assert batch["attention_mask"][b, :n].all() and not batch["attention_mask"][b, n:].any()


def test_qa_dataset_custom_keys(tokenizer):
    ds = QADataset([{"q": "Who?", "a": "Me."}], tokenizer, question_key="q", answer_key="a")
    assert len(ds) == 1
    with pytest.raises(DataError, match="question_key"):
        QADataset([{"q": "Who?", "a": "Me."}], tokenizer)


# --------------------------------------------------------------------------- forget / retain


@pytest.fixture(scope="module")
def forget_retain(tokenizer):
    forget = QADataset(load_split("embedded", "forget10", config=SMALL), tokenizer)
    retain = QADataset(load_split("embedded", "retain90", config=SMALL), tokenizer)
    return forget, retain


def _picks(dataset) -> list[int]:
    return [dataset[i]["retain"]["index"] for i in range(len(dataset))]


def test_forget_retain_rng(forget_retain):
    forget, retain = forget_retain
    a = _picks(ForgetRetainDataset(forget, retain, seed=1, rank=0))
    b = _picks(ForgetRetainDataset(forget, retain, seed=1, rank=0))
    c = _picks(ForgetRetainDataset(forget, retain, seed=1, rank=1))
    assert a == b
    assert a != c


def test_forget_retain_rank_from_env(forget_retain, monkeypatch):
    forget, retain = forget_retain
    monkeypatch.setenv("RANK", "3")
    ds = ForgetRetainDataset(forget, retain, seed=0)
    assert ds.rank == 3
    assert _picks(ds) == _picks(ForgetRetainDataset(forget, retain, seed=3, rank=0))


def test_forget_retain_idk_and_collator(forget_retain, tokenizer):
    forget, retain = forget_retain
    idk = load_idk_answers()
    ds = ForgetRetainDataset(forget, retain, seed=0, idk_answers=idk)
    item = ds[2]
    assert set(item) == {"forget", "retain", "idk"}
    assert torch.equal(item["forget"]["input_ids"], forget[2]["input_ids"])
    text = tokenizer.decode(item["idk"]["input_ids"], skip_special_tokens=True)
    assert text.startswith(PLAIN.format_prompt(forget.questions[2]))
    assert any(text.endswith(answer) for answer in idk)
    batch = ForgetRetainCollator(tokenizer.pad_token_id)([ds[0], ds[1]])
    assert set(batch) == {"forget", "retain", "idk"}
    assert batch["retain"]["input_ids"].shape[0] == 2
    only_forget = ForgetRetainCollator(tokenizer.pad_token_id)([ForgetRetainDataset(forget, None)[0]])
    assert set(only_forget) == {"forget"}


# --------------------------------------------------------------------------- errors


def test_error_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_split(str(tmp_path / "nope"), "forget10")


def test_error_missing_split_file(tmp_path):
    (tmp_path / "full.json").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"no file forget10\.json.*full\.json"):
        load_split(str(tmp_path), "forget10")


def test_error_unknown_split():
    with pytest.raises(DataError, match="unknown split 'forget_ten'.*forget10"):
        load_split("embedded", "forget_ten")


def test_error_missing_columns_and_fix(tmp_path):
    (tmp_path / "full.json").write_text(json.dumps({"prompt": "q?", "response": "a."}) + "\n")
    with pytest.raises(DataError, match=r"lacks the columns \['question', 'answer'\].*'prompt'.*columns="):
        load_split(str(tmp_path), "full")
    ds = load_split(str(tmp_path), "full", columns={"prompt": "question", "response": "answer"})
    assert ds[0] == {"question": "q?", "answer": "a."}
    with pytest.raises(DataError, match="neither"):
        load_split(str(tmp_path), "full", columns={"input": "question"})


def test_error_empty_split(tmp_path):
    (tmp_path / "forget10.json").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load_split(str(tmp_path), "forget10")


@pytest.mark.parametrize(
    "kwargs",
    [{"num_authors": 1}, {"qa_per_author": 0}, {"num_perturbed": 0}, {"seed": "x"}, {"num_holdout_authors": 0}],
)
def test_error_bad_config(kwargs):
    with pytest.raises(DataError, match="EmbeddedConfig"):
        EmbeddedConfig(**kwargs)


def test_error_config_misuse(tmp_path):
    with pytest.raises(DataError, match="only applies"):
        load_split(str(tmp_path), "full", config=EmbeddedConfig())
    with pytest.raises(DataError, match="retain none"):
        load_split("embedded", "forget99", config=EmbeddedConfig(num_authors=2))
    with pytest.raises(DataError, match="num_holdout_authors"):
        load_split("embedded", "holdout50", config=SMALL)


def test_error_hub_offline(monkeypatch):
    import datasets
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True, raising=False)
    with pytest.raises(DataError, match="could not load split 'forget10' of the Hugging Face dataset 'locuslab/TOFU'"):
        load_split("locuslab/TOFU", "forget10")


def test_error_bad_source():
    with pytest.raises(DataError, match="neither 'embedded'"):
        load_split("not-a-thing", "full")
