# The two commands: `make run` (the product, locally) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench conformance clean

$(STAMP): requirements.txt runtime/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

install: $(STAMP)

# The whole system locally: embedded AWS (moto), two nodes, the chat origin and its page.
run: install
	$(PY) -m runtime local

test: install lint
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) -m bench.run
	$(PY) -m bench.cluster
	$(PY) -m bench.local
	$(PY) -m bench.charts

# Every Autobahn case, compression ones included; the summary goes to docs/conformance.md.
conformance: install
	$(PY) -m bench.conformance

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
