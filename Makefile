# Two commands for a newcomer: `make demo` and `make test`. Both bootstrap .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PREFECT_HOME ?= $(CURDIR)/.tradpal/prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_LEVEL ?= WARNING
# the ephemeral API server gets 20 s to start by default: not always enough on a busy 2-core machine
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 90

.PHONY: demo test bench chaos lint venv clean up down

venv: $(STAMP)

$(STAMP): requirements/main.lock requirements/dev.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check "uv==0.13.9"
	@$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) -r requirements/main.lock -r requirements/dev.lock
	@$(VENV)/bin/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tradpal demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks

# The long reliability campaigns: 10,000 bad inputs, 60 SIGKILL crash trials, the whole
# fault matrix; every trial's figures as JSON lines in .tradpal/reliability.jsonl.
chaos: $(STAMP)
	@mkdir -p .tradpal && rm -f .tradpal/reliability.jsonl
	TRADPAL_HYPOTHESIS_PROFILE=chaos TRADPAL_RELIABILITY_PROFILE=chaos \
	TRADPAL_RELIABILITY_REPORT=$(CURDIR)/.tradpal/reliability.jsonl $(PY) -m pytest -q tests/reliability
	@$(PY) -m tests.reliability.summary .tradpal/reliability.jsonl

# A local production-like Prefect stack (server, work pool `tradpal`, worker, deployments):
# API and UI on 127.0.0.1:$${TRADPAL_PREFECT_PORT:-4200}; `make down` stops what `make up` started.
up: $(STAMP)
	$(PY) -m deployments.stack up

down:
	$(PY) -m deployments.stack down

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf .tradpal out
