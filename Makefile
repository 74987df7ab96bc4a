# One command each: `make run` (the closed loop: `pipeline demo` on the embedded
# stack), `make test`, `make lint`, `make typecheck`, `make bench`, `make smoke`.
# Each creates the venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv browser run smoke bench test lint typecheck fmt down status clean

# llama.cpp (the llm extra) compiles here, about 5 minutes on 2 cores. It is built
# for AVX2/FMA/F16C (-DGGML_NATIVE=OFF), not for this CPU: a native build uses
# every instruction the CPU advertises, and some virtual machines advertise AMX
# without enabling it (a general protection fault at the first decode). pip's
# wheel cache does not key on CMAKE_ARGS, hence --no-cache-dir and its own stamp.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
LLAMA_STAMP := $(VENV)/.llama-portable

$(LLAMA_STAMP): constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m pip install -q --no-cache-dir \
	  --force-reinstall --no-deps -c constraints.txt llama-cpp-python
	@touch $(LLAMA_STAMP)

$(STAMP): pyproject.toml constraints.txt $(LLAMA_STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[server,llm,dev]'
	@touch $(STAMP)

venv: $(STAMP)

# The review page's browser check (tests/integration/test_review_page_browser.py)
# drives Debian's headless chromium through its chromedriver: installed here when
# absent and run as root, otherwise one line says what to install (the test then fails).
CHROMIUM := /usr/bin/chromium
CHROMEDRIVER := /usr/bin/chromedriver

browser:
	@if [ ! -x $(CHROMIUM) ] || [ ! -x $(CHROMEDRIVER) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver for the review page's browser check"; \
	    apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "the browser check needs $(CHROMIUM) and $(CHROMEDRIVER): apt-get install -y chromium chromium-driver" >&2; \
	  fi; \
	fi

run: $(STAMP)
	$(BIN)/pipeline demo

smoke: $(STAMP)
	$(BIN)/pipeline up
	$(BIN)/pipeline smoke

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

test: $(STAMP) browser
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
