# The two commands a newcomer needs: `make demo` and `make test`. Each sets itself up on a fresh machine.
# `make demo ARGS="--clock-start 2026-12-01T19:00:00+08:00"` passes options to `lamplighter demo`.
#
# Two virtual environments: .venv holds what the running system needs (the demo, the services, the benchmarks and
# every `lamplighter` command), .venv-dev adds the tools of the tests and checks.
VENV ?= .venv
DEV ?= .venv-dev
ARGS ?=
KEY := $(shell cksum pyproject.toml | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(KEY)
# An editable install of a flat layout makes setuptools warn that folders named like the packages in the working
# directory take precedence: here they are the packages, so the warning says nothing to a newcomer.
EDITABLE := PYTHONWARNINGS="ignore:Editable installation"
DEV_STAMP := $(DEV)/.installed-$(KEY)
WEB := api/web/static/vendor/swagger-ui-bundle.js

$(STAMP): pyproject.toml
	@scripts/ensure-system-packages
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(EDITABLE) $(VENV)/bin/python -m pip install --quiet -e .
	@rm -f $(VENV)/.installed-* && touch $(STAMP)

$(DEV_STAMP): pyproject.toml
	@scripts/ensure-system-packages
	@test -x $(DEV)/bin/python || python3 -m venv $(DEV)
	$(DEV)/bin/python -m pip install --quiet --upgrade pip
	$(EDITABLE) $(DEV)/bin/python -m pip install --quiet -e '.[dev]'
	@rm -f $(DEV)/.installed-* && touch $(DEV_STAMP)

# The pages' front-end libraries (uPlot; Swagger UI for /docs), from the npm registry (api/web/package-lock.json),
# served by the app itself.
$(WEB): api/web/package-lock.json
	@scripts/build-web

.PHONY: demo test check bench services clean

demo: $(STAMP) $(WEB)
	$(VENV)/bin/lamplighter demo $(ARGS)

test: $(DEV_STAMP) $(WEB)
	@scripts/ensure-system-packages --browser
	$(DEV)/bin/python -m pytest

check: $(DEV_STAMP) $(WEB)
	$(DEV)/bin/ruff check .
	$(DEV)/bin/ruff format --check .
	$(DEV)/bin/mypy
	$(DEV)/bin/lint-imports
	cd api/web && node_modules/.bin/eslint . && node_modules/.bin/tsc -p . && node --test tests/

bench: $(STAMP)
	$(VENV)/bin/lamplighter bench ingest

services: $(STAMP)
	$(VENV)/bin/lamplighter services

clean:
	rm -rf .run $(VENV) $(DEV) *.egg-info
