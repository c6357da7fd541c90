PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1

.PHONY: demo test soak lint bench clean-venv

$(BIN)/bridge: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(BIN)/bridge

demo: $(BIN)/bridge
	$(BIN)/bridge demo

test: lint
	$(BIN)/pytest -q

# The long end-to-end runs (@pytest.mark.slow), left out of `make test` by addopts.
soak: $(BIN)/bridge
	$(BIN)/pytest -q -m slow

lint: $(BIN)/bridge
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(BIN)/bridge
	for f in bench/*.py; do $(BIN)/python $$f || exit 1; done

clean-venv:
	rm -rf $(VENV)
