# The two commands a new user runs: `make demo` and `make test`. Everything else is set up here.
PYTHON ?= python3
VENV ?= .venv
# e.g. `make test DJANGO=4.2` installs Django 4.2.x in the virtualenv
DJANGO ?=
HOST ?= 127.0.0.1
PORT ?= 8000

BIN := $(VENV)/bin
DJANGO_PIN := $(if $(DJANGO),"Django==$(DJANGO).*",)

.PHONY: demo test docs bench clean system-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . $(DJANGO_PIN)
	touch $@

# mysqlclient compiles against the MariaDB client library, the pooler tests need PgBouncer and the
# metrics test Prometheus: install them from Debian when we can.
system-deps:
	@if ! pkg-config --exists libmariadb 2>/dev/null && ! pkg-config --exists mysqlclient 2>/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing libmariadb-dev and pkg-config (needed to build mysqlclient)"; \
	    (apt-get install -y -q libmariadb-dev pkg-config >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && apt-get install -y -q libmariadb-dev pkg-config >/dev/null)); \
	  else echo "libmariadb-dev missing: MariaDB tests will be skipped"; fi; \
	fi
	@# PgBouncer: the tests of workers behind a connection pooler (tests/test_poolers.py) start their own
	@# (the service the package starts under systemd is not needed).
	@if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing pgbouncer (the connection-pooler tests start one)"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q pgbouncer >/dev/null)); \
	    if [ -d /run/systemd/system ]; then systemctl disable --now pgbouncer >/dev/null 2>&1 || true; fi; \
	  else echo "pgbouncer missing: the connection-pooler tests will be skipped"; fi; \
	fi
	@# Prometheus: the metrics test (tests/test_metrics.py) starts its own, scraping a test server (the
	@# service the package starts under systemd is not needed).
	@if ! command -v prometheus >/dev/null; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "Installing prometheus (the metrics test starts one)"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q prometheus >/dev/null)); \
	    if [ -d /run/systemd/system ]; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi; \
	  else echo "prometheus missing: the end-to-end metrics test will be skipped"; fi; \
	fi

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-base | system-deps
	$(BIN)/pip install -q -e '.[test]' $(DJANGO_PIN) || $(BIN)/pip install -q -e '.[test-nomysql]' $(DJANGO_PIN)
	touch $@

test: $(VENV)/.installed-test
	$(BIN)/python tests/run_suites.py $(ARGS)

demo: $(VENV)/.installed-base
	cd demo && ../$(BIN)/python manage.py migrate --verbosity 0
	cd demo && ../$(BIN)/python manage.py demo_setup
	@echo ""
	@echo "  Demo running: admin at http://$(HOST):$(PORT)/admin/  (login: demo / demo)"
	@echo "  Stop the web server and the worker with one Ctrl-C (or a SIGTERM to the runner)."
	@echo ""
	cd demo && ../$(BIN)/python run.py $(HOST):$(PORT)

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run.py $(ARGS)

clean:
	rm -rf $(VENV) demo/db.sqlite3 build

$(VENV)/.installed-docs: pyproject.toml $(VENV)/.installed-base
	$(BIN)/pip install -q -e '.[docs]' $(DJANGO_PIN)
	touch $@

# The documentation site (Sphinx + MyST + Furo) in build/docs/html; any warning fails the build.
docs: $(VENV)/.installed-docs
	$(BIN)/sphinx-build -W --keep-going -q -b html docs build/docs/html
