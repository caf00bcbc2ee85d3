# `make test` sets up everything on a fresh machine: a .venv at the repository root with the
# project and its test dependencies, and redis-server from the system packages when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch 2.14.1 and torchaudio 2.11.0 install from this machine's disk; they work together.
TORCH_PINS := torch==2.14.1 torchaudio==2.11.0

.PHONY: install test lint redis-server

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PINS)
	$(PY) -m pip install --quiet -e '.[worker,api,test]'
	touch $(STAMP)

install: $(STAMP)

redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server; }

# The web page tests (tests/web) drive Debian's chromium through its chromedriver, at these paths.
.PHONY: browser
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# The lint gate (part of `make test`, so CI runs it): ruff's rules and formatting over the tree, and
# mypy --strict over the service packages (settings in pyproject.toml).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy jobs api worker echo_client

test: install redis-server browser lint
	$(PY) -m pytest

# `make reliability`: the long runs of the fault tests (tests/reliability, marker `reliability`): 20 worker
# SIGKILLs over jobs and a book, 10 API restarts under load, hostile text through every route, and at
# least 1,000 schemathesis requests against /v1/openapi.json (ECHO_FUZZ_EXAMPLES: cases per operation,
# default 100). Their short runs are part of `make test`. ECHO_KILL_SEED / ECHO_FUZZ_SEED replay a run.
.PHONY: reliability
reliability: install redis-server
	ECHO_RELIABILITY=1 $(PY) -m pytest -m reliability -rP -p no:cacheprovider  # -rP: each run prints its figures

# `make dev`: the whole service on this machine without Docker (redis-server, one worker on this
# machine's device, the API on http://127.0.0.1:8000), local-directory storage unless
# ECHO_S3_ENDPOINT_URL is set. `make dev-tiny` does the same on a tiny random checkpoint (CPU, no
# download). Extra flags: make dev DEV_ARGS="--api-port 8080".
.PHONY: dev dev-tiny
dev: install redis-server
	$(PY) scripts/dev.py $(DEV_ARGS)

dev-tiny: install redis-server
	$(PY) scripts/dev.py --tiny $(DEV_ARGS)
