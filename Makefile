# Two entry points (see README): `make run` and `make test`. Both build .venv from scratch if needed.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PROMPT  ?= The capital of France is
STAMP   := $(VENV)/.installed

.PHONY: run test lint venv bench-cpu clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# NOTE: torch is pinned to the CPU wheel on disk; a bare `torch` would pull a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[gpu,server,test]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VPY) -m rocmforge pull smollm2
	$(VPY) -m rocmforge chat -m smollm2 -p "What is the capital of France?" -n 48
	$(VPY) -m rocmforge generate -m smollm2 -p "$(PROMPT)" -n 32

lint: $(STAMP)
	$(VPY) -m ruff check rocmforge tests benchmarks

# pytest exit code 5 means "no tests collected": not a failure for us.
test: lint
	TRITON_INTERPRET=1 $(VPY) -m pytest -q -ra $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

bench-cpu: $(STAMP)
	$(VPY) benchmarks/bench_cpu.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
