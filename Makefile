# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up on a fresh machine.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
WEB := api/web/static/vendor/uPlot.iife.min.js

.PHONY: demo test check bench services clean

$(STAMP): pyproject.toml
	@scripts/ensure-system-packages
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

# The pages' front-end libraries, from the npm registry (api/web/package-lock.json), served by the app itself.
$(WEB): api/web/package-lock.json
	@scripts/build-web

demo: $(STAMP) $(WEB)
	$(VENV)/bin/lamplighter demo

test: $(STAMP) $(WEB)
	@scripts/ensure-system-packages --browser
	$(PY) -m pytest

check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(VENV)/bin/lamplighter bench ingest

services: $(STAMP)
	$(VENV)/bin/lamplighter services

clean:
	rm -rf .run $(VENV) *.egg-info
