# One command each: `make run` (the closed loop: `pipeline demo` on the embedded
# stack), `make test`, `make lint`, `make typecheck`, `make bench`, `make smoke`.
# Each creates the venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv run smoke bench test lint typecheck fmt down status clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[server,llm,dev]'
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/pipeline demo

smoke: $(STAMP)
	$(BIN)/pipeline up
	$(BIN)/pipeline smoke

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

status: $(STAMP)
	$(BIN)/pipeline status

down: $(STAMP)
	$(BIN)/pipeline down
