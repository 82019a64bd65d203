"""The study command lines: ``python -m analyses tofu|muse|wmdp``, the old names and spellings, ``analyses.report``.

Fast: nothing is trained; the one subprocess checks the deprecated ``python -m analyses.geffect_wmdp``.
"""
from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from analyses import cli
from analyses.config import RENAMED, UNLEARNING_FIELDS, StudyConfig, parse_study_args, study_field
from analyses.methods import method_spec
from analyses.pipeline import Study
from analyses.studies import BENCHMARKS, MuseStudyConfig, WmdpStudyConfig
from unlearning.config import UnlearningArguments

REPO = Path(__file__).resolve().parents[2]
CONFIGS = [StudyConfig, MuseStudyConfig, WmdpStudyConfig]


# --------------------------------------------------------------------------- python -m analyses
def test_the_first_argument_names_the_study(capsys):
    with pytest.raises(SystemExit) as done:
        cli.run_cli([])
    assert done.value.code == 2 and "usage: python -m analyses {tofu,muse,wmdp}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as done:
        cli.run_cli(["--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and all(f"  {name}" in out for name in ("tofu", "muse", "wmdp"))
    with pytest.raises(SystemExit) as done:
        cli.run_cli(["tofo", "--quick"])
    assert done.value.code == 2 and "unknown study 'tofo'" in capsys.readouterr().err
    for name in BENCHMARKS:
        with pytest.raises(SystemExit) as done:
            cli.run_cli([name, "--help"])
        out = capsys.readouterr().out
        assert done.value.code == 0 and out.startswith(f"usage: python -m analyses {name} ")
        assert cli.description(name).split(":")[0] in " ".join(out.split())
    with pytest.raises(ValueError, match="unknown study 'nope'; choose one of tofu, muse, wmdp"):
        cli.main([], study="nope")


def test_old_module_names_are_aliases(capsys):
    for name, config_class in (("tofu", StudyConfig), ("muse", MuseStudyConfig), ("wmdp", WmdpStudyConfig)):
        sys.modules.pop(f"analyses.geffect_{name}", None)
        with pytest.warns(DeprecationWarning, match=f"analyses.geffect_{name} is the old name of `python -m analyses {name}`"):
            module = importlib.import_module(f"analyses.geffect_{name}")
        assert module.exit_code is cli.exit_code and getattr(module, config_class.__name__) is config_class
        with pytest.raises(SystemExit):
            module.main(["--help"])
        assert capsys.readouterr().out.startswith(f"usage: python -m analyses {name} ")


def test_old_command_still_runs_and_says_so():
    done = subprocess.run([sys.executable, "-m", "analyses.geffect_wmdp", "--help"], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m analyses wmdp ") and "--rmu_preset" in done.stdout
    assert "FutureWarning: `python -m analyses.geffect_wmdp` is now `python -m analyses wmdp`" in done.stderr


def test_exit_code():
    assert cli.exit_code({"gate_passed": True, "failed": {}}) == 0
    assert cli.exit_code({"gate_passed": True, "failed": {"ga": "boom"}}) == 1
    assert cli.exit_code({"gate_passed": False, "failed": {}}) == 2
    assert cli.exit_code({"gate_passed": False, "failed": {}}, allow_failed_gate=True) == 0


# --------------------------------------------------------------------------- the training arguments' names
@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_the_study_speaks_the_unlearning_arguments_names(config_class):
    """Every field the study hands to the unlearning run is a field of ``UnlearningArguments`` of the same
    name and default type, and the renamed ones carry their old name (and nothing else does)."""
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    training = {f.name: f for f in dataclasses.fields(UnlearningArguments)}
    for name in (*UNLEARNING_FIELDS, "learning_rate"):
        assert name in fields and name in training, name
        assert type(fields[name].default) is type(training[name].default), name
    renamed = {f.metadata["renamed_from"]: name for name, f in fields.items() if "renamed_from" in f.metadata}
    assert renamed == RENAMED
    with pytest.raises(ValueError, match="not an old name"):
        study_field(1, "help", ["methods"], renamed_from="batchsize")


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda c: c.__name__)
def test_old_spellings_set_the_new_fields_and_warn(config_class):
    old = ["--lr", "2e-4", "--steps=5", "--epochs", "2", "--batch-size", "3", "--grad_accum", "2", "--probe-size", "5",
           "--no-pg-effects"]
    new = ["--learning-rate", "2e-4", "--max-steps=5", "--num_train_epochs", "2", "--per-device-train-batch-size", "3",
           "--gradient-accumulation-steps", "2", "--geffect-probe-size", "5", "--no-pg-effect"]
    with pytest.warns(FutureWarning) as record:
        from_old = parse_study_args(old, config_class=config_class)
    assert from_old == parse_study_args(new, config_class=config_class)
    assert (from_old.learning_rate, from_old.max_steps, from_old.num_train_epochs, from_old.pg_effect) == (2e-4, 5, 2.0,
                                                                                                         False)
    messages = [str(w.message) for w in record]
    assert len(messages) == 7 and "--lr is the old spelling of --learning-rate" in messages[0]
    assert "--no-pg-effects is the old spelling of --pg-effect" in messages[-1]
    with pytest.warns(FutureWarning, match="--pg-effects is the old spelling of --pg-effect"):
        assert parse_study_args(["--pg-effects", "false"], config_class=config_class).pg_effect is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new spellings never warn
        parse_study_args(new, config_class=config_class)


def test_unlearning_arguments_are_the_study_fields_as_they_are(tmp_path):
    """``Study.unlearning_args`` passes every UNLEARNING_FIELDS value unchanged, and the method's objective
    hyper-parameters as a dict (no JSON string in between)."""
    config = StudyConfig(output_dir=str(tmp_path), num_train_epochs=3.0, max_steps=7, per_device_train_batch_size=2,
                         gradient_accumulation_steps=3, geffect_every=2, geffect_probe_size=5, pg_effect=False,
                         max_length=96, seed=11, learning_rate=3e-4, full=True)
    study = Study(config)
    study.paths = {"target": None, "retain": None}
    spec = method_spec("satimp_group")
    args = study.unlearning_args(spec, tmp_path / "runs" / "satimp_group")
    for name in UNLEARNING_FIELDS:
        assert getattr(args, name) == getattr(config, name), name
    assert args.learning_rate == 3e-4 and args.method == "satimp" and args.use_cpu == (study.device == "cpu")
    assert args.objective_kwargs == {"granularity": "group"} and args.objective_hparams() == {"granularity": "group"}
    assert study.unlearning_args(method_spec("ga"), tmp_path / "ga").objective_kwargs is None
    default = Study(StudyConfig(output_dir=str(tmp_path)))
    default.paths = {"target": None, "retain": None}
    assert default.unlearning_args(method_spec("ga"), tmp_path / "ga").max_steps == -1  # the epochs decide


# --------------------------------------------------------------------------- old package name, report CLI
def test_analyses_benchmarks_is_a_deprecated_alias_of_analyses_studies():
    for name in [m for m in sys.modules if m == "analyses.benchmarks" or m.startswith("analyses.benchmarks.")]:
        sys.modules.pop(name)
    with pytest.warns(DeprecationWarning, match="analyses.benchmarks was renamed analyses.studies"):
        from analyses.benchmarks.muse import MuseStudyConfig as old_config
    import analyses.benchmarks as old
    import analyses.studies as new
    import analyses.studies.wmdp as new_wmdp
    assert old_config is MuseStudyConfig and old.benchmark_for is new.benchmark_for
    assert old.wmdp is new_wmdp and sys.modules["analyses.benchmarks.base"] is sys.modules["analyses.studies.base"]


def test_report_command_line(tmp_path, capsys):
    from analyses import report

    with pytest.raises(SystemExit) as done:
        report.main([])
    assert done.value.code == 2 and "--synthetic" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        report.main(["--help"])
    assert "(required)" in capsys.readouterr().out
    path = report.main(["--synthetic", str(tmp_path / "demo.html")])
    assert path == tmp_path / "demo.html" and "id='findings'" in path.read_text()
