# jax-scientist: `make run` and `make test` install whatever is missing, then do their job.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEX_PACKAGES := texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended lmodern latexmk
export LITELLM_LOCAL_MODEL_COST_MAP := True
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
export PYTHONUNBUFFERED := 1

.PHONY: install run smoke test bench lint clean

install: $(STAMP) tex

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e ".[test]"
	touch $(STAMP)

# Debian's TeX Live, installed only when latexmk or a needed style file is missing.
tex:
	@if ! command -v latexmk >/dev/null || ! kpsewhich lmodern.sty >/dev/null 2>&1 || ! kpsewhich natbib.sty >/dev/null 2>&1; then \
		echo "installing TeX Live ($(TEX_PACKAGES))"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(TEX_PACKAGES); \
	fi

run: install
	$(VENV)/bin/scientist run $(ARGS)

smoke: install
	$(VENV)/bin/scientist run --profile smoke $(ARGS)

test: install
	$(VENV)/bin/pytest -q $(PYTEST_ARGS)

bench: install
	$(PY) benchmarks/envs.py
	$(PY) benchmarks/ppo.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/meta_es.py

lint: install
	$(VENV)/bin/ruff check flows tasks jaxlib_kernels tests benchmarks

clean:
	rm -rf runs .cache .pytest_cache
