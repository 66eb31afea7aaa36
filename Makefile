# Two entry points for a fresh machine: `make run` and `make test`.
# Each creates its own virtual environment; nothing is installed system-wide. Every package
# comes from the lock (uv.lock, exported with hashes to infra/requirements/), hashes required.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Linters for the infrastructure (cfn-lint, checkov, zizmor, hadolint, check-jsonschema) live
# in their own environment: their pins (checkov's boto3) must not fight the job's.
TOOLS := .venv-tools
REQ := infra/requirements
# The documentation site (mkdocs.yml, docs/), built by `make test` and `make docs`.
DOCS_SITE ?= site
OUT ?= out
ARGS ?=
# The tests `make test` selects; .ci/run drops the container tests where containers cannot run.
TEST_MARKERS ?= not gpu_image
# One pytest process per core (pytest-xdist): most tests use one core, and a 2-core machine
# otherwise idles half the time. Tests sharing a costly session fixture stay on one worker
# (tests/conftest.py). TEST_WORKERS= runs the suite in one process.
TEST_WORKERS ?= -n auto --dist loadgroup
# uv is installed first, by pip, from its own export (hashes required); it then installs every
# environment from the lock's exports, hashes required, several times faster than pip.
PIP_LOCKED := -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps
UV_LOCKED := pip install --quiet --compile-bytecode --require-hashes --no-deps

.PHONY: run check test test-gpu-image lint bench tools lock docs clean

# The job (tensorflow-cpu) and the test tools, then the job itself, editable, built by the
# locked setuptools (no build isolation: nothing unhashed is fetched).
$(VENV)/.installed: $(REQ)/test.txt $(REQ)/bootstrap.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) $(PIP_LOCKED) -r $(REQ)/bootstrap.txt
	$(VENV)/bin/uv $(UV_LOCKED) --python $(PY) -r $(REQ)/test.txt
	$(VENV)/bin/uv pip install --quiet --no-deps --no-build-isolation --python $(PY) -e .
	touch $@

$(TOOLS)/.installed: $(REQ)/tools.txt $(VENV)/.installed
	$(PYTHON) -m venv $(TOOLS)
	$(VENV)/bin/uv $(UV_LOCKED) --python $(TOOLS)/bin/python -r $(REQ)/tools.txt
	touch $@

tools: $(TOOLS)/.installed

run: $(VENV)/.installed
	$(PY) -m job run --out $(OUT) $(ARGS)

# The quick loop: the linters and the tests not marked slow (no whole runs, browsers,
# servers or containers; tests/conftest.py marks them).
check: $(VENV)/.installed
	$(PY) -m ruff check job tests
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -m "not slow and not gpu_image" $(TEST_WORKERS) -q $(ARGS)

# Everything a contributor needs, the CPU image included. The GPU image (6 GB of CUDA wheels,
# 3-6 minutes to build cold, past the 10 minutes with make test) has its own target, which
# .ci/run also runs.
test: $(VENV)/.installed $(TOOLS)/.installed
	$(PY) -m ruff check job tests
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(DOCS_SITE)
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(PY) -m pytest -m "$(TEST_MARKERS)" $(TEST_WORKERS) $(ARGS)

test-gpu-image: $(VENV)/.installed
	$(PY) -m pytest -m gpu_image $(ARGS)

# The documentation site into ./site (strict: a broken link or a page outside the nav fails);
# the generated reference pages
# (docs/reference/cli.md, tables.md) are remade by `python -m tests.docs_gen`.
docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict --site-dir $(DOCS_SITE)

# Development tools (tests/bench: benchmarks, the model search), e.g. ARGS="scoring --shape ml-1m".
bench: $(VENV)/.installed
	PYTHONPATH=tests $(PY) -m bench $(ARGS)

# After editing dependencies in pyproject.toml: resolve again and rewrite the exports.
# tests/test_lock.py fails until this has been run and its output committed.
lock: $(VENV)/.installed
	UV_PREVIEW_FEATURES=package-conflicts $(VENV)/bin/uv lock
	$(PY) tests/lock.py

clean:
	rm -rf $(VENV) $(TOOLS) $(OUT) $(DOCS_SITE) .pytest_cache .mypy_cache .ruff_cache
