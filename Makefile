# One command each: `make demo` runs the three-peer demo, `make test` runs the tests.
# Both create .venv and install xmesh-agent into it on first use.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test test-fast lint bench clean

# setuptools prints an "Editable installation" notice for every editable install of a package whose
# folders are mapped (workflows/ -> xmesh_agent.workflows); it is filtered, real warnings still show.
$(BIN)/.installed: pyproject.toml
	@echo "installing xmesh-agent into $(VENV) (first run, about a minute)…"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip
	@PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: $(BIN)/.installed
	$(BIN)/xmesh-agent demo

test: $(BIN)/.installed
	$(BIN)/pytest

test-fast: $(BIN)/.installed
	$(BIN)/pytest -m "not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
