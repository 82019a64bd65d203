# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv (if missing), install torch first (so pip takes the CPU wheel rather
# than pulling a multi-GB CUDA build), then the project, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# dev: pytest; bench: opacus, for the Opacus row of benchmarks/bench_geffect.py (also run by the tests);
# quant: bitsandbytes, the reference the quantization tests compare against
EXTRAS ?= dev,bench,wmdp,quant

.PHONY: venv demo test test-fast bench bench-quick clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH_SPEC)"
	$(PY) -m pip install -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(PY) -m analyses tofu $(ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

bench: venv
	for f in benchmarks/bench_*.py; do $(PY) $$f $(BENCH_ARGS) || exit 1; done

bench-quick: venv
	$(MAKE) bench BENCH_ARGS=--quick

clean:
	rm -rf $(VENV) .pytest_cache
