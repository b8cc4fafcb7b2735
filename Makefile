# The two commands: `make run` (the product, locally) and `make test` (the whole suite).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint browser jsclients bench conformance clean

$(STAMP): requirements.txt runtime/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

install: $(STAMP)

# The whole system locally: embedded AWS (moto), two nodes, the chat origin and its page.
run: install
	$(PY) -m runtime local

# The browser test drives Debian's chromium through playwright (no browser download). Installed
# here when missing and possible (root with apt); otherwise the browser test skips, loudly.
browser:
	@command -v chromium >/dev/null 2>&1 \
	  || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	       && { apt-get install -y -q chromium >/dev/null 2>&1 \
	            || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; }; } \
	  || echo "WARNING: chromium is missing and cannot be installed here: the browser test will be SKIPPED"

# The real JS GraphQL clients (graphql-ws, subscriptions-transport-ws) for their test, installed
# from tests/js/package-lock.json when node and npm exist and the install is missing or stale;
# otherwise that test skips, loudly.
JS := tests/js
jsclients:
	@if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then \
	  echo "WARNING: node or npm is missing: the JS GraphQL client test will be SKIPPED"; \
	elif [ ! -e $(JS)/node_modules/.package-lock.json ] \
	     || [ $(JS)/package-lock.json -nt $(JS)/node_modules/.package-lock.json ] \
	     || [ $(JS)/package.json -nt $(JS)/node_modules/.package-lock.json ]; then \
	  npm ci --prefix $(JS) --no-audit --no-fund --silent \
	    || { rm -rf $(JS)/node_modules; \
	         echo "WARNING: npm ci failed in $(JS): the JS GraphQL client test will be SKIPPED"; }; \
	fi

test: install lint browser jsclients
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) -m bench.run
	$(PY) -m bench.cluster
	$(PY) -m bench.channels
	$(PY) -m bench.local
	$(PY) -m bench.graphql
	$(PY) -m bench.attacks
	$(PY) -m bench.handshakes
	$(PY) -m bench.aws
	$(PY) -m bench.charts

# Every Autobahn case, compression ones included; the summary goes to docs/conformance.md.
conformance: install
	$(PY) -m bench.conformance

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
