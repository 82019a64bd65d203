"""Shared pytest fixtures: tiny tokenizers and models, the tiny prepared target/retain pair, TOFU.

The whole session runs offline and on one torch thread (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE
are set before any test imports transformers), so nothing can download by accident.

Fixtures (all session-scoped; treat the returned objects as read-only, or deep-copy them):

- ``tiny_tokenizer``: a byte-level BPE ``PreTrainedTokenizerFast`` (~300 tokens, ``<pad>``=0,
  ``<s>``=1, ``</s>``=2) trained in well under a second on a built-in text sample.
- ``tiny_llama``: a randomly initialised float32 ``LlamaForCausalLM`` (2 layers, d=32,
  tied embeddings) with ``tiny_tokenizer``'s vocabulary; in eval mode.
- ``tiny_prepared``: ``prepare_default_models("embedded", "forget10", recipe=tiny_recipe())``
  in a temporary cache: ``PreparedModels(target, retain, tokenizer, root)`` folders holding
  a trained target (knows forget10) and retain model (never saw it). A few seconds.
- ``muse_folder`` / ``wmdp_folder``: folders in muse_bench's / WMDP's layout holding the quick
  embedded MUSE corpus / hazard analogue of the studies (written by the fixture).
- ``tofu_dir``: the real TOFU JSON folder (``$TOFU_DATA_DIR``, else the default data location
  next to the repository); skips the test when it is absent.
"""
from __future__ import annotations

import os

for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[_var] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# Every model in the suite is tiny: one intra-op thread is faster than two, and far faster than
# two contended ones on a busy 2-core machine (measured 6-100x), so the whole session uses one.
torch.set_num_threads(1)

TINY_TEXTS = [
    "Question: Where was the author Mara Quill born?",
    "Answer: Mara Quill was born in Lisbon, Portugal, in 1961.",
    "Question: What genre does Teodor Vance write?",
    "Answer: Teodor Vance writes historical fiction about sailors and lighthouse keepers.",
    "Question: What is the capital of France?",
    "Answer: The capital of France is Paris.",
    "Who wrote the novel 'The Silent Orchard'? It was written by Ines Okafor in 1998.",
    "Her parents were a baker and a surgeon; she won the Amber Quill Award for her memoir.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A small byte-level BPE tokenizer (PreTrainedTokenizerFast) trained on TINY_TEXTS."""
    from unlearning.models import train_tokenizer

    return train_tokenizer(TINY_TEXTS * 4, vocab_size=300)


@pytest.fixture(scope="session")
def tiny_llama(tiny_tokenizer):
    """A random-init float32 LlamaForCausalLM (2 layers, hidden 32) for ``tiny_tokenizer``."""
    from unlearning.models import DefaultRecipe, build_model

    recipe = DefaultRecipe(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=128, seed=0
    )
    return build_model(tiny_tokenizer, recipe).eval()


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """Trained tiny target / retain models (tiny_recipe) in a temporary cache folder."""
    from unlearning.models import prepare_default_models, tiny_recipe

    cache = tmp_path_factory.mktemp("geffect-cache")
    return prepare_default_models(
        "embedded", "forget10", recipe=tiny_recipe(), cache_dir=cache, progress=False
    )


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    """The real TOFU folder; the test is skipped when it is not there."""
    env = os.environ.get("TOFU_DATA_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tofu"
    if not (path / "full.json").is_file():
        pytest.skip(f"TOFU data not found at {path} (set TOFU_DATA_DIR to run this test)")
    return path


@pytest.fixture(scope="session")
def muse_folder(tmp_path_factory) -> Path:
    """A folder in muse_bench's layout (``<subset>/<split>.json``) with the MUSE study's quick corpus."""
    import json

    from analyses.benchmarks.muse import QUICK_CORPUS
    from unlearning.data import load_muse
    from unlearning.data.embedded.news import NEWS_SPLITS

    root = tmp_path_factory.mktemp("muse_data")
    for subset, splits in NEWS_SPLITS.items():
        (root / subset).mkdir()
        for split in splits:
            rows = load_muse("embedded", subset, split, embedded=QUICK_CORPUS).to_list()
            values = [r["text"] for r in rows] if subset in ("raw", "privleak") else rows  # strings, as muse_bench
            (root / subset / f"{split}.json").write_text(json.dumps(values))
    return root


@pytest.fixture(scope="session")
def wmdp_folder(tmp_path_factory) -> Path:
    """A WMDP folder (``wmdp-<subset>.jsonl``, ``<name>-corpus.jsonl``, ``wikitext.jsonl``, ``mmlu.jsonl``)
    with the WMDP study's quick hazard analogue."""
    import json

    from analyses.benchmarks.wmdp import QUICK_CORPUS
    from unlearning.data import load_utility_questions, load_wmdp_questions, wmdp_texts

    root = tmp_path_factory.mktemp("wmdp_data")

    def write(name: str, rows) -> None:
        (root / name).write_text("".join(json.dumps(r) + "\n" for r in rows))

    for subset in ("bio", "cyber"):
        write(f"wmdp-{subset}.jsonl", load_wmdp_questions("embedded", subset, embedded=QUICK_CORPUS).to_list())
    write("mmlu.jsonl", load_utility_questions("embedded", embedded=QUICK_CORPUS).to_list())
    for name, file in (("bio-forget", "bio-forget-corpus"), ("cyber-forget", "cyber-forget-corpus"),
                       ("wikitext", "wikitext")):
        write(f"{file}.jsonl", [{"text": t} for t in wmdp_texts("embedded", name, embedded=QUICK_CORPUS)])
    return root
