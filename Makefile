# Everyday commands. `make` alone lists them.
BIN ?= .venv/bin
PYTHON ?= $(BIN)/python
export HF_HUB_OFFLINE := 1

.PHONY: help install lint format typecheck layers test test-fast snapshots bench ci

help:
	@echo "make install     a virtual environment in .venv with the dev tools"
	@echo "make lint        ruff check + ruff format --check"
	@echo "make format      ruff format + ruff check --fix"
	@echo "make typecheck   mypy on the installed package"
	@echo "make layers      the layer rule (the window imports no mlx, the UI no mlx, ...)"
	@echo "make test        the whole test suite (the README's command)"
	@echo "make test-fast   the tests not marked slow (seconds)"
	@echo "make snapshots   regenerate the TUI snapshots after a deliberate UI change"
	@echo "make bench       the benchmarks (minutes; ratios against mlx-lm)"
	@echo "make ci          what CI runs: lint, typecheck, layers, test"

install:
	python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"

lint:
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

format:
	$(PYTHON) -m ruff format .
	$(PYTHON) -m ruff check --fix .

typecheck:
	rm -rf build/typecheck && mkdir -p build/typecheck
	cp -r z1mlx build/typecheck/z1mlx && cp -r convert build/typecheck/z1mlx/convert && cp -r tui build/typecheck/z1mlx/tui
	$(PYTHON) -m mypy build/typecheck/z1mlx

layers:
	$(PYTHON) -m pytest -q tests/unit/test_layers.py

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

snapshots:
	$(PYTHON) -m pytest -q tests/tui/test_tui_snapshots.py --snapshot-update

bench:
	$(PYTHON) bench/bench_engine.py
	$(PYTHON) bench/bench_chat.py
	$(PYTHON) bench/bench_finetune.py
	$(PYTHON) bench/bench_blas.py
	$(PYTHON) bench/bench_serve.py

ci: lint typecheck layers test
