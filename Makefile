# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates its own virtual environment; nothing is installed system-wide.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Linters for the infrastructure (cfn-lint, checkov, zizmor, hadolint, check-jsonschema) live
# in their own environment: their pins must not fight the job's.
TOOLS := .venv-tools
OUT ?= out
ARGS ?=

.PHONY: run test lint bench tools clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[cpu,test]"
	touch $@

$(TOOLS)/.installed: infra/tools-requirements.txt
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --upgrade pip
	$(TOOLS)/bin/pip install --quiet -r infra/tools-requirements.txt
	touch $@

tools: $(TOOLS)/.installed

run: $(VENV)/.installed
	$(PY) -m job run --out $(OUT) $(ARGS)

test: $(VENV)/.installed $(TOOLS)/.installed
	$(PY) -m ruff check job tests
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(PY) -m pytest $(ARGS)

bench: $(VENV)/.installed
	$(PY) -m job bench $(ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) $(OUT) .pytest_cache .mypy_cache .ruff_cache
