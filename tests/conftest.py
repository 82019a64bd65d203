"""Shared pytest fixtures: tiny tokenizers and models, the tiny prepared target/retain pair, TOFU.

The whole session runs offline and on one torch thread (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE
are set before any test imports transformers), so nothing can download by accident.

Fixtures (all session-scoped; treat the returned objects as read-only, or deep-copy them):

- ``tiny_tokenizer``: a byte-level BPE ``PreTrainedTokenizerFast`` (~300 tokens, ``<pad>``=0,
  ``<s>``=1, ``</s>``=2) trained in well under a second on a built-in text sample.
- ``tiny_llama``: a randomly initialised float32 ``LlamaForCausalLM`` (2 layers, d=32,
  tied embeddings) with ``tiny_tokenizer``'s vocabulary; in eval mode.
- ``tiny_prepared``: ``prepare_default_models(tiny_source(), recipe=tiny_recipe())`` (the
  3-author embedded benchmark, forget10 = 1 author) in a temporary cache:
  ``PreparedModels(target, retain, tokenizer, root)`` folders holding a trained target (knows
  forget10) and retain model (never saw it). A few seconds.
- ``muse_folder`` / ``wmdp_folder``: folders in muse_bench's / WMDP's layout holding the quick
  embedded MUSE corpus / hazard analogue of the studies (written by the fixture).
- ``tofu_dir``: the real TOFU JSON folder. Its one setting is ``$GEFFECT_TOFU_DATA``
  (default: ``data/tofu`` in the folder ``shared`` next to the repository).
- ``tofu_reference_dir``: TOFU's published evaluation logs of Phi-1.5 retain models
  (``$GEFFECT_TOFU_REFERENCE``, default: the folder ``tofu-reference`` next to the TOFU folder).

Both skip the test when the folder is absent, except under ``CI=true``, where they fail it.

**No silent skips in CI.** Under ``CI=true`` every skip is a failure unless the test is marked
``cuda`` (it needs a GPU). The terminal summary lists each skip with its reason, and a
module-level skip (``importorskip``) also turns the exit status into a failure.
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
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=128, seed=0,
        tie_word_embeddings=True,
    )
    return build_model(tiny_tokenizer, recipe).eval()


@pytest.fixture(scope="session")
def tiny_prepared(tmp_path_factory):
    """Trained tiny target / retain models (tiny_recipe) in a temporary cache folder."""
    from unlearning.models import prepare_default_models, tiny_recipe, tiny_source

    cache = tmp_path_factory.mktemp("geffect-cache")
    return prepare_default_models(tiny_source(), recipe=tiny_recipe(), cache_dir=cache, progress=False)


REPO = Path(__file__).resolve().parents[1]
ALLOWED_SKIP_MARKERS = ("cuda",)  # a test marked cuda needs a GPU: the only allowed skip under CI


def under_ci() -> bool:
    """True when the environment variable CI is set to true / 1 / yes (as CI services do)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def tofu_data_path() -> Path:
    """Where the real TOFU JSON rows live: ``$GEFFECT_TOFU_DATA``, else the default next to the repository."""
    env = os.environ.get("GEFFECT_TOFU_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data" / "tofu"


def tofu_reference_path() -> Path:
    """TOFU's published evaluation logs: ``$GEFFECT_TOFU_REFERENCE``, else ``tofu-reference`` beside the TOFU rows."""
    env = os.environ.get("GEFFECT_TOFU_REFERENCE")
    return Path(env) if env else tofu_data_path().parent / "tofu-reference"


def require(condition: bool, reason: str) -> None:
    """Skip the calling test when ``condition`` is false; under CI=true fail it instead."""
    if condition:
        return
    if under_ci():
        pytest.fail(f"required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def tofu_dir() -> Path:
    """The real TOFU folder (skip when absent; fail under CI)."""
    path = tofu_data_path()
    require((path / "full.json").is_file(), f"TOFU data not found at {path} (set GEFFECT_TOFU_DATA)")
    return path


@pytest.fixture(scope="session")
def tofu_reference_dir() -> Path:
    """TOFU's published Phi-1.5 retain-model evaluation logs (skip when absent; fail under CI)."""
    path = tofu_reference_path()
    require((path / "phi_retain90" / "eval_log_forget.json").is_file(),
            f"TOFU reference logs not found at {path} (set GEFFECT_TOFU_REFERENCE)")
    return path


# ---- CI: a skip is a failure unless explicitly allowed -------------------------------------------

_SKIPS: list[tuple[str, str, bool]] = []  # (test id, reason, allowed)


def _skip_reason(report) -> str:
    lr = report.longrepr
    reason = str(lr[2]) if isinstance(lr, tuple) and len(lr) == 3 else str(lr)
    return reason.removeprefix("Skipped: ")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.skipped or hasattr(rep, "wasxfail"):
        return
    allowed = any(item.get_closest_marker(m) is not None for m in ALLOWED_SKIP_MARKERS)
    reason = _skip_reason(rep)
    _SKIPS.append((item.nodeid, reason, allowed))
    if under_ci() and not allowed:
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI=true, which allows skips only for tests marked {ALLOWED_SKIP_MARKERS}: {reason}"


def pytest_collectreport(report):
    if report.skipped:  # a whole module skipped at import (importorskip): no item to mark
        _SKIPS.append((report.nodeid, _skip_reason(report), False))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _SKIPS:
        return
    ci = under_ci()
    terminalreporter.section("skips" + (" (CI=true: not allowed ones fail)" if ci else ""))
    for nodeid, reason, allowed in _SKIPS:
        verdict = "allowed" if allowed else ("FAILED" if ci else "skipped")
        terminalreporter.write_line(f"{verdict:8} {nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if under_ci() and any(not allowed for _, _, allowed in _SKIPS) and session.exitstatus in (0, 5):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def muse_folder(tmp_path_factory) -> Path:
    """A folder in muse_bench's layout (``<subset>/<split>.json``) with the MUSE study's quick corpus."""
    import json

    from analyses.studies.muse import QUICK_CORPUS
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

    from analyses.studies.wmdp import QUICK_CORPUS
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
