VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: install test lint equivalence bench demo

install:
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip
	# The CPU wheel of torch lies on disk; a looser pin would pull a multi-GB CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[all,embed,export,test]"

test:
	$(PY) -m pytest -n 2 --dist loadgroup -q --durations=20

lint:
	$(PY) -m ruff check src tests conversion benchmarks examples

equivalence:
	$(PY) tests/equivalence/matrix.py

bench:
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/bench.py $(BENCH_ARGS)
	$(PY) benchmarks/report.py

demo:
	$(PY) examples/demo.py
