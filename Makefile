# The README's test command is `make test`; .ci/run calls it.
PYTHON ?= python3

.PHONY: test lint services

test:
	$(PYTHON) -m pip install -q -e '.[test]'
	scripts/test-deps.sh
	scripts/services.sh
	$(PYTHON) -m pytest -q

lint:
	ruff check .
	ruff format --check .
	mypy

services:
	scripts/services.sh
