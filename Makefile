# Meterboard: `make run` (demo on SQLite, no Redis needed) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3
PY := .venv/bin/python
REQ_HASH := $(shell sha1sum requirements.txt | cut -c1-12)
VENV_STAMP := .venv/.installed-$(REQ_HASH)
HOST ?= 127.0.0.1
PORT ?= 8000
LOCALSTRIPE_PORT ?= 8420

.PHONY: venv run test soak lint bench migrate screenshots

# (Re)install whenever requirements.txt changes.
$(VENV_STAMP): requirements.txt
	@echo "==> Creating .venv and installing requirements.txt (first run takes a minute)"
	@test -x $(PY) || $(PYTHON) -m venv .venv
	@$(PY) -m pip install --disable-pip-version-check --quiet --upgrade pip
	@$(PY) -m pip install --disable-pip-version-check --progress-bar on -r requirements.txt | grep -v '^Requirement already satisfied' || true
	@$(PY) -c "import django, rest_framework, celery" || (echo "Installing requirements failed: see the pip output above." >&2; exit 1)
	@rm -f .venv/.installed-* && touch $@

venv: $(VENV_STAMP)

# The demo: migrate, load demo data, then serve the app with a Celery worker and beat on the
# embedded defaults (SQLite under var/, kombu filesystem broker), and without STRIPE_SECRET_KEY a
# local Stripe simulator (localstripe on LOCALSTRIPE_PORT) that the demo's payments go to.
# Ctrl-C stops everything.
run: venv
	@HOST=$(HOST) PORT=$(PORT) LOCALSTRIPE_PORT=$(LOCALSTRIPE_PORT) scripts/run.sh

# The whole suite, on PostgreSQL + Redis when they answer (required when CI=true), else SQLite.
# It includes the browser tests (Playwright driving Debian's /usr/bin/chromium; .ci/run installs it).
test: venv
	@eval "$$($(PY) scripts/test_services.py)" && $(PY) -m pytest $(PYTEST_ARGS)

# The simulated cluster alone (tests/test_cluster.py: its own PostgreSQL primary and replica,
# PgBouncer, Redis, localstripe, two of each process, some killed; 3 to 4 minutes). `make test` runs it too.
.PHONY: test-cluster
test-cluster: venv
	@eval "$$($(PY) scripts/test_services.py)" && $(PY) -m pytest -q -p no:cacheprovider tests/test_cluster.py $(PYTEST_ARGS)

# The model-based money test (tests/billing/test_money_model.py) for much longer than `make test`
# runs it: MB_SOAK_EXAMPLES sequences of MB_SOAK_STEPS steps (300 × 80), random each run; prints
# progress and the number of steps and sequences. MB_TEST_SQLITE=1 runs it on SQLite.
soak: venv
	@eval "$$($(PY) scripts/test_services.py)" && MB_SOAK=1 $(PY) -m pytest -q -s -p no:cacheprovider \
		tests/billing/test_money_model.py::test_money_is_conserved_under_any_sequence $(PYTEST_ARGS)

# A full-page screenshot of every page at 1280 and 390 px (`<page>-phone.png`) in var/screenshots/:
# the browser test that visits every page with sample data (sign-in, the workspace's pages, a budget's
# edit page, a grouped statement and its print view, the staff page and the admin), and a new
# workspace's Get started checklist as it goes (test_browser_onboarding), on the test database.
screenshots: venv
	@eval "$$($(PY) scripts/test_services.py)" && MB_SCREENSHOTS=$(CURDIR)/var/screenshots \
		$(PY) -m pytest -q tests/dashboard/test_browser.py tests/dashboard/test_browser_onboarding.py -k "every_page or new_workspace"
	@echo "Screenshots in var/screenshots/"

lint: venv
	@.venv/bin/ruff check .

# Benchmarks on the configured database (DATABASE_URL; PostgreSQL at 127.0.0.1 when it answers):
# `python -m bench all` runs ingest, close, allowance and overview (python -m bench --help).
# BENCH_ARGS go to ingestion and the close (the close's options are --close-*), ALLOWANCE_ARGS and
# OVERVIEW_ARGS to theirs. bench-smoke: each at a tiny size, as `make test` runs them.
bench: venv
	@$(PY) -m bench all $(BENCH_ARGS) --allowance-args='$(ALLOWANCE_ARGS)' --overview-args='$(OVERVIEW_ARGS)'

.PHONY: bench-smoke
bench-smoke: venv
	@eval "$$($(PY) scripts/test_services.py)" && $(PY) -m pytest -q -p no:cacheprovider tests/test_bench_smoke.py $(PYTEST_ARGS)

# The events table at scale (issue 13): 20 million events over 6 months in their month partitions,
# ingestion, overview and close beside the same on an empty database (ratios), and the partitions
# the close reads; PostgreSQL only, in its own database meterboard_bench_scale (dropped at the end).
# SCALE_ARGS: python -m bench scale --help (e.g. "--events 2000000 --workspaces 500").
.PHONY: bench-scale
bench-scale: venv
	@$(PY) -m bench scale $(SCALE_ARGS)
