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

# HF transformers 5.x is a peer in `make bench`; it lives in its own venv (the tests pin 4.57.6 in $(VENV)).
HF5_VENV ?= .venv-bench-hf5

bench:
	$(PIP) install -q -e ".[bench]"
	test -x $(HF5_VENV)/bin/python || python3 -m venv $(HF5_VENV)
	$(HF5_VENV)/bin/python -m pip install -q torch==2.13.0
	$(HF5_VENV)/bin/python -m pip install -q -r benchmarks/requirements-hf5.txt
	$(PY) benchmarks/bench.py --hf5-python $(HF5_VENV)/bin/python $(BENCH_ARGS)
	$(PY) benchmarks/report.py

demo:
	$(PY) examples/demo.py
