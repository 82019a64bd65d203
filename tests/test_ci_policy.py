"""The suite's CI policy (tests/conftest.py): under CI=true a skip fails unless the test is marked ``cuda``.

Runs pytest in a subprocess on a scratch folder holding a copy of this suite's conftest and a few
tests that skip in every way pytest offers (call-time skip, skipif mark, fixture skip, module-level
importorskip), once without and once with CI=true.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

TESTS = '''
import pytest

def test_passes():
    pass

def test_skips_at_call():
    pytest.skip("no widget here")

@pytest.mark.skipif(True, reason="decorated skip")
def test_skipif_mark():
    pass

@pytest.fixture
def needs_thing():
    pytest.skip("fixture could not find the thing")

def test_skips_in_fixture(needs_thing):
    pass

@pytest.mark.cuda
def test_gpu_only():
    pytest.skip("no CUDA device")

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''

MODULE_SKIP = '''
import pytest
pytest.importorskip("no_such_module_for_the_ci_policy_test")

def test_never_collected():
    pass
'''

INI = '''[pytest]
markers =
    slow: slow
    cuda: needs a GPU
addopts = -ra --strict-markers -p no:cacheprovider
'''


def _run(folder: Path, ci: bool, *files: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(folder / "pytest.ini"), "--rootdir", str(folder),
                           *files], cwd=folder, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ci-policy")
    shutil.copy(HERE / "conftest.py", d / "conftest.py")
    (d / "pytest.ini").write_text(INI)
    (d / "test_skips.py").write_text(TESTS)
    (d / "test_module_skip.py").write_text(MODULE_SKIP)
    return d


def test_locally_skips_are_only_reported(folder):
    proc = _run(folder, False, "test_skips.py", "test_module_skip.py")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "1 passed, 5 skipped, 1 xfailed" in out, out
    assert "no widget here" in out and "fixture could not find the thing" in out  # listed with reasons


def test_under_ci_every_skip_but_cuda_fails(folder):
    proc = _run(folder, True, "test_skips.py")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    for name in ("test_skips_at_call", "test_skipif_mark", "test_skips_in_fixture"):
        assert f"FAILED test_skips.py::{name}" in out or f"ERROR test_skips.py::{name}" in out, (name, out)
    assert "test_gpu_only" not in [line.split("::")[-1].split(" ")[0] for line in out.splitlines()
                                  if line.startswith(("FAILED", "ERROR"))], out
    assert "allowed  test_skips.py::test_gpu_only: no CUDA device" in out, out
    assert "1 passed" in out and "1 skipped" in out and "1 xfailed" in out, out


def test_under_ci_a_module_level_skip_fails_the_run(folder):
    proc = _run(folder, True, "test_module_skip.py")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "no_such_module_for_the_ci_policy_test" in out, out


def test_an_empty_selection_exits_5(folder):
    """pytest's 'no tests collected' (exit 5) is not 0, so `.ci/run` (which fails on any non-zero) fails."""
    proc = _run(folder, True, "test_skips.py", "-k", "no_test_has_this_name")
    assert proc.returncode == 5, proc.stdout + proc.stderr
