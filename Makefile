# dubsim: `make run` serves on 127.0.0.1:4777, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run test lint fmt system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m service

# Debian packages: chromium for the browser tests (wrk too for `make bench`).
# Installed when missing and we are root; otherwise we say what is missing and stop.
# Chromium is looked up by tools/chromium-path, the same lookup the browser tests use.
DEBS ?= chromium

system-deps:
	@missing=""; \
	for pkg in $(DEBS); do \
	  if [ "$$pkg" = chromium ]; then found="tools/chromium-path"; else found="command -v $$pkg"; fi; \
	  $$found >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	  else \
	    echo "missing Debian packages:$$missing (run as root, or install them)" >&2; exit 1; \
	  fi; \
	fi

lint: $(STAMP)
	$(VENV)/bin/ruff check service client tests bench
	$(VENV)/bin/ruff format --check service client tests bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff check --fix service client tests bench
	$(VENV)/bin/ruff format service client tests bench

test: $(STAMP) system-deps lint
	$(PY) -m pytest

bench: $(STAMP)
	$(MAKE) system-deps DEBS="chromium wrk"
	$(PY) -m bench

# Mutation testing over the core's pure parts against their unit tests (setup.cfg [mutmut]).
# About a minute on 2 cores; not part of `make test`. docs/mutation.md keeps the figures.
.PHONY: mutation
mutation: $(STAMP)
	rm -rf mutants
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
