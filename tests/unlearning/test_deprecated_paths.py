"""The old import paths of ``unlearning`` keep working for one release, with a DeprecationWarning;
the ``python -m unlearning.<name>`` entry points run without one."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# old module -> {name: the object's new home "module:name"}
MOVED = {
    "unlearning.hooks": {"GEffectCallback": "unlearning.callbacks:GEffectCallback",
                         "EvalCallback": "unlearning.callbacks:EvalCallback",
                         "JsonlLogCallback": "unlearning.callbacks:JsonlLogCallback",
                         "read_jsonl": "unlearning.runs:read_jsonl", "append_jsonl": "unlearning.runs:append_jsonl",
                         "EVAL_DIR": "unlearning.runs:EVAL_DIR", "merge_shards": "unlearning.evaluation:merge_shards"},
    "unlearning.gradient_hooks": {"GEffectCallback": "unlearning.callbacks:GEffectCallback",
                                  "WeightMaskCallback": "unlearning.callbacks:WeightMaskCallback"},
    "unlearning.probes": {"probe_batches": "unlearning.data:probe_batches"},
    "unlearning.weighting": {"satimp": "unlearning.objectives.weighting:satimp"},
    "unlearning.trainer": {"UnlearningTrainer": "unlearning.training:UnlearningTrainer"},
    "unlearning.config": {"UnlearningArguments": "unlearning.training:UnlearningArguments"},
    "unlearning.train": {"run_unlearning": "unlearning.training:run_unlearning",
                         "RUN_CONFIG_FILE": "unlearning.runs:RUN_CONFIG_FILE"},
    "unlearning.evaluate": {"evaluate_model": "unlearning.evaluation:evaluate_model",
                            "EvalResult": "unlearning.evaluation:EvalResult", "main": "unlearning.cli.evaluate:main"},
    "unlearning.evaluate_muse": {"evaluate_muse": "unlearning.evaluation:evaluate_muse"},
    "unlearning.evaluate_wmdp": {"evaluate_wmdp": "unlearning.evaluation:evaluate_wmdp"},
    "unlearning.attribute": {"main": "unlearning.cli.attribute:main"},
    "unlearning.finetune": {"fine_tune": "unlearning.models:fine_tune", "main": "unlearning.cli.finetune:main"},
    "unlearning.replay": {"replay_run": "unlearning.runs:replay_run",
                          "resolve_objective": "unlearning.runs:resolve_objective"},
    "unlearning.metrics.muse": {"verbmem_table": "unlearning.evaluation.muse:verbmem_table",
                                "greedy_continuations": "unlearning.metrics.generation:greedy_continuations",
                                "text_mia_scores": "unlearning.metrics.mia:text_mia_scores"},
}


def _new(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_and_gives_the_same_object(old, monkeypatch):
    monkeypatch.delitem(sys.modules, old, raising=False)
    with pytest.warns(DeprecationWarning, match=old.rsplit(".", 1)[-1]):
        module = importlib.import_module(old)
    for name, new in MOVED[old].items():
        assert getattr(module, name) is _new(new), (old, name)
    assert set(MOVED[old]) <= set(module.__all__)


def test_deprecated_aliases(monkeypatch):
    from unlearning import objectives
    from unlearning.data.probes import build_probes

    monkeypatch.delitem(sys.modules, "unlearning.train", raising=False)
    with pytest.warns(DeprecationWarning):
        train = importlib.import_module("unlearning.train")
    assert set(train.IDK_METHODS) == {"idk", "dpo"} == {n for n in objectives.available() if objectives.needs_refusal(n)}
    from unlearning.data import DataError

    with pytest.warns(DeprecationWarning, match="probe_batches"):
        with pytest.raises(DataError, match="no rows"):
            build_probes([], None, 4, 0)  # delegates to probe_batches


def test_entry_points_run_without_a_warning():
    """Every ``python -m unlearning.<name>`` is an entry point: ``--help`` runs and warns about nothing."""
    script = ("import runpy, sys, warnings\n"
              "for name in sys.argv[1:]:\n"
              "    sys.argv = [name, '--help']\n"
              "    with warnings.catch_warnings(record=True) as seen:\n"
              "        warnings.simplefilter('always')\n"
              "        try:\n"
              "            runpy.run_module('unlearning.' + name, run_name='__main__', alter_sys=True)\n"
              "        except SystemExit as e:\n"
              "            assert e.code == 0, (name, e.code)\n"
              "    ours = [str(w.message) for w in seen if 'unlearning' in str(w.message)]\n"
              "    assert not ours, (name, ours)\n"
              "    print('ran', name)\n")
    names = ["train", "evaluate", "evaluate_muse", "evaluate_wmdp", "attribute", "finetune", "replay"]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", script, *names],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ran ")] == names
