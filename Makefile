# jax-scientist: `make run` and `make test` install whatever is missing, then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# jax's accelerator extra: empty = the CPU build; on a GPU host `make install JAX_EXTRA=cuda12` (or cuda13) installs
# jax[cuda12] within pyproject.toml's jax range. The stamp carries the extra, so changing it reinstalls.
JAX_EXTRA ?=
JAX_RANGE := $(shell sed -n 's/^ *"jax\([<>=!~][^"]*\)".*/\1/p' pyproject.toml)
STAMP := $(VENV)/.installed$(if $(JAX_EXTRA),-$(JAX_EXTRA))
ifneq ($(JAX_EXTRA),)
ifeq ($(JAX_RANGE),)
$(error JAX_EXTRA: no "jax<range>" dependency line found in pyproject.toml to pin jax[$(JAX_EXTRA)] to)
endif
endif
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended lmodern latexmk
export LITELLM_LOCAL_MODEL_COST_MAP := True
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export PYTHONUNBUFFERED := 1

.PHONY: install run smoke server test test-bench bench lint clean tex browser postgres

install: $(STAMP) tex

# uv installs the project into the venv: 13 s from a fresh clone on this 2-core machine, where pip took 231 s
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "uv>=0.9,<1"
	$(VENV)/bin/uv pip install --quiet --python $(PY) -e ".[test]"$(if $(JAX_EXTRA), "jax[$(JAX_EXTRA)]$(JAX_RANGE)")
	touch $(STAMP)

# Debian's TeX Live, installed only when latexmk or a needed style file is missing.
tex:
	@if ! command -v latexmk >/dev/null || ! kpsewhich lmodern.sty >/dev/null 2>&1 || ! kpsewhich natbib.sty >/dev/null 2>&1; then \
		echo "installing TeX Live ($(TEX_PACKAGES))"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES); \
	fi

# Debian's Chromium and its WebDriver (the UI tests drive the Prefect UI in headless Chromium), only when missing.
BROWSER_PACKAGES := chromium chromium-driver
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing $(BROWSER_PACKAGES)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES); \
	fi

# Debian's PostgreSQL server binaries (the Postgres test starts a throw-away cluster of its own), only when missing.
postgres:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing postgresql"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends postgresql; \
	fi

run: install
	$(VENV)/bin/scientist run $(ARGS)

smoke: install
	$(VENV)/bin/scientist run --profile smoke $(ARGS)

# a local Prefect server with its UI on 127.0.0.1:4200 (then: export PREFECT_API_URL=http://127.0.0.1:4200/api)
server: install
	$(VENV)/bin/scientist server $(ARGS)

# Two pytest workers; tests/conftest.py groups the tests into work units (a test file, so that its module fixtures
# are shared, or one template's part of a file parametrized over the registry) and starts the longest units first,
# by the cold durations in tests/durations.json. Refresh them cold (the compilation cache and the exported programs
# beside it, jaxlib_kernels/exported.py) with
#   rm -rf .cache/jax .cache/jax-exported && SCIENTIST_RECORD_DURATIONS=tests/durations.json make test
# The suite's budget is 20 minutes from a fresh clone, cold, on 2 cores: expensive runs are shared across checks (one
# server, deployment and worker for the UI and Postgres checks) rather than started per concern. The quick runs of
# the heavier benchmark scripts (marker bench_script, about 4 minutes of compiles) are left to `make test-bench`;
# make test still checks that each of those scripts starts and parses its arguments. Three workers on 2 cores
# measured slower (24:49 against 21:19).
TEST_WORKERS ?= 2
test: install browser postgres
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder -m "not bench_script" $(PYTEST_ARGS)

test-bench: install
	$(VENV)/bin/pytest -q -m bench_script tests/benchmarks $(PYTEST_ARGS)

# The peers of benchmarks/ (SB3, MiniGrid, CPU torch): torch first, so that pip keeps the CPU build it has.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PIP) install --quiet "torch==2.13.0"
	$(PIP) install --quiet -e ".[test,bench]"
	touch $(BENCH_STAMP)

# Each script prints a markdown table (kept beside its JSON in benchmarks/results/). PIPELINE_ARGS="--profiles smoke"
# skips the ~10-minute default-profile run.
PIPELINE_ARGS ?=
bench: install $(BENCH_STAMP)
	mkdir -p benchmarks/results
	set -o pipefail; $(PY) benchmarks/envs.py $(ENVS_ARGS) | tee benchmarks/results/envs.md
	set -o pipefail; $(PY) benchmarks/ppo.py $(PPO_ARGS) | tee benchmarks/results/ppo.md
	set -o pipefail; $(PY) benchmarks/ppo_profile.py | tee benchmarks/results/ppo_profile.md
	set -o pipefail; $(PY) benchmarks/pipeline.py $(PIPELINE_ARGS) | tee benchmarks/results/pipeline.md
	set -o pipefail; $(PY) benchmarks/meta_es.py | tee benchmarks/results/meta_es.md
	set -o pipefail; $(PY) benchmarks/marl.py | tee benchmarks/results/marl.md
	set -o pipefail; $(PY) benchmarks/bbo.py | tee benchmarks/results/bbo.md
	set -o pipefail; $(PY) benchmarks/dpo.py | tee benchmarks/results/dpo.md
	set -o pipefail; $(PY) benchmarks/headroom.py | tee benchmarks/results/headroom.md
	set -o pipefail; $(PY) benchmarks/dpo_settings.py | tee benchmarks/results/dpo_settings.md

lint: install
	$(VENV)/bin/ruff check flows tasks jaxlib_kernels tests benchmarks

clean:
	rm -rf runs .cache .pytest_cache
