# dubsim: `make run` serves on 127.0.0.1:4777, `make test` runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Two installs, two stamps: running needs only the server's extras; the tests need every tool.
RUN_STAMP := $(VENV)/.installed-run
STAMP     := $(VENV)/.installed-dev

.PHONY: run cluster test lint fmt system-deps bench clean docs

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[server]'
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

# media jobs need ffmpeg and espeak-ng: installed when missing and we are root; without them
# the server still runs (media jobs answer 422 media_unavailable), hence the leading `-`
run: $(RUN_STAMP)
	-$(MAKE) --no-print-directory system-deps DEBS="ffmpeg espeak-ng"
	$(VENV)/bin/dubsim-server

# The README's settings table is generated from service/settings.py (a test checks it).
docs: $(RUN_STAMP)
	$(PY) -m service.settings --update-readme README.md

# Debian packages the tests and tools use: chromium (browser tests), redis-server and nginx
# (the Redis backend and the proxy tests), ffmpeg and espeak-ng (media); wrk too for `make bench`.
# Installed when missing and we are root; otherwise we say what is missing and stop.
# Chromium is looked up by tools/chromium-path, the same lookup the browser tests use.
DEBS ?= chromium redis-server nginx ffmpeg espeak-ng

system-deps:
	@missing=""; \
	for pkg in $(DEBS); do \
	  if [ "$$pkg" = chromium ]; then \
	    tools/chromium-path >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	  else \
	    dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; \
	  fi; \
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
	$(PY) -m pytest -n 2 --dist worksteal --durations=25  # two workers (the suite waits on servers more than it computes); idle ones take queued tests from the busy one

# redis-server (AOF), two dubsim processes sharing it, nginx in front on one port (4780).
cluster: $(RUN_STAMP)
	$(MAKE) system-deps DEBS="redis-server nginx"
	$(PY) -m deploy.cluster --processes 2 --port 4780

bench: $(STAMP)
	$(MAKE) system-deps DEBS="chromium wrk"
	$(PY) -m bench

# Mutation testing over the core's pure parts against their unit tests (setup.cfg [mutmut]).
# Over an hour on 2 cores with the core modules; not part of `make test`. docs/mutation.md keeps the figures.
.PHONY: mutation
mutation: $(STAMP)
	rm -rf mutants
	$(VENV)/bin/mutmut run
	$(VENV)/bin/mutmut results

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
