# Everything bootstraps from nothing but python3: `make test` creates .venv,
# installs the pinned tool chain and the package (editable), lints, type-checks, tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: venv lint test test-install test-compat test-upstream bench demo e2e stack stack-down clean test-bench

$(STAMP): pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	touch $(STAMP)

venv: $(STAMP)

LINTED := src tests tests_install tests_upstream tests_bench examples benchmarks e2e

lint: venv
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy --strict src

# Two workers, one test file each at a time (pytest-xdist): the suite is order-independent
# (each test starts in an empty context) and the machine has two cores.
test: lint
	$(BIN)/pytest -n 2 --dist loadfile

# The install matrix: the wheel in fresh venvs, installed as a user does (pip's own
# resolution, no dev pins), Python 3.9 / 3.11 / 3.13 via pyenv. Needs the package registry.
test-install: venv
	$(BIN)/pytest tests_install -p no:cacheprovider -o testpaths=tests_install -q -rs

# The benchmark commands the README and docs/performance.md show, in their quick form (every
# comparison measured, every goal given a verdict, a quiet stderr; no timing asserted). CI runs
# it; ~2 min (the instruction counts run under valgrind), so not part of `make test`.
test-bench: venv
	$(BIN)/pytest tests_bench -p no:cacheprovider -o testpaths=tests_bench -q

# The GenAI tests against the oldest SDK releases the hook supports (not part of `make test`).
# The dev tool chain, then the SDKs at the floors of pyproject.toml's [openai] / [anthropic]
# extras, found by the resolver (uv's --resolution lowest-direct, as the official GenAI repo's
# tox.ini "oldest" environments do): the oldest supported versions are written only there.
# constraints-oldest.txt holds what those floors need from their own dependencies.
COMPAT := .venv-compat
UV_COMPAT := $(BIN)/uv pip install --quiet --python $(COMPAT)/bin/python
test-compat: venv
	rm -rf $(COMPAT)
	$(BIN)/uv venv --quiet --python $(PYTHON) $(COMPAT)
	$(UV_COMPAT) -r requirements-dev.txt -e .
	$(UV_COMPAT) --resolution lowest-direct --upgrade-package openai --upgrade-package anthropic \
		-c constraints-oldest.txt -r pyproject.toml --extra openai --extra anthropic
	$(COMPAT)/bin/python -c "import openai, anthropic; print('oldest SDKs: openai', openai.__version__, '/ anthropic', anthropic.__version__)"
	$(COMPAT)/bin/pytest tests/test_genai.py tests/test_call_headers.py tests/test_genai_seeds.py tests/test_baggage.py tests/test_auto_instrumentation.py

# The official GenAI instrumentations' own test suites (from their sdists, cassettes replayed)
# with payi_otel instrumented; every GenAI span must carry payi.* (not part of `make test`).
test-upstream:
	$(PYTHON) tests_upstream/run.py --baseline $(UPSTREAM_ARGS)

bench: venv
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

demo: venv
	$(BIN)/python examples/support_assistant/main.py

# The demo's traces through a real OpenTelemetry Collector (the shipped config, and with the
# redact-user-id.yaml overlay) into a real Jaeger v2, checked through Jaeger's HTTP API; and
# through the collector fleet of README "At scale" (agent, 2 gateways, Jaeger, Prometheus). Needs
# Go: the first run builds the binaries (cached in ~/.cache/payi-otel-e2e); see e2e/run.py.
e2e: venv
	$(BIN)/python e2e/run.py

# The collector + Jaeger of `make e2e`, left running on 127.0.0.1 for your own app: OTLP in on
# 4317 (gRPC) / 4318 (HTTP), Jaeger's API and UI on 16686 (its own OTLP receiver on 14317, so
# nothing clashes). Prints the endpoints; `make stack-down` stops both. Builds the binaries
# with Go on the first run (cached); see e2e/stack.py. Standard library only: no .venv needed.
# Other ports: STACK_ARGS="--otlp-http-port N".
stack:
	$(PYTHON) e2e/stack.py up $(STACK_ARGS)

stack-down:
	$(PYTHON) e2e/stack.py down $(STACK_ARGS)

clean:
	rm -rf $(VENV) $(COMPAT) build src/*.egg-info .mypy_cache .ruff_cache
