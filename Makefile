# The two commands: `make run` serves the demo portal, `make test` runs the whole suite.
# `make compat` checks the portal against Authelia's own files, from a copy in AUTHELIA_CORPUS.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SECRETS := var/secrets
APT_PACKAGES := slapd ldap-utils nginx chromium samba-ad-dc samba-ad-provision
# PostgreSQL's server binaries live under a versioned directory: any installed version will do.
APT_PACKAGES += postgresql
SYSTEM_BINARIES := /usr/sbin/slapd /usr/bin/ldapwhoami /usr/sbin/nginx /usr/bin/chromium \
	/usr/sbin/samba /usr/bin/samba-tool /usr/share/samba/setup/ad-schema
SYSTEM_BINARIES += /usr/lib/postgresql/*/bin/initdb
# session.redis: the Redis fixtures (tests/integration/redis_server.py); Sentinel is its own package.
APT_PACKAGES += redis-server redis-sentinel
SYSTEM_BINARIES += /usr/bin/redis-server /usr/bin/redis-sentinel
# telemetry.metrics: promtool checks the scraped text, a real Prometheus scrapes the portal
# (tests/integration/prometheus.py); the package's service is not started.
APT_PACKAGES += prometheus
SYSTEM_BINARIES += /usr/bin/prometheus /usr/bin/promtool
# axe-core for the accessibility check (tests/e2e/test_accessibility.py): a test-only copy from
# npm under the venv, never served and never committed.
AXE_VERSION := 4.11.0
AXE := $(VENV)/axe/.installed-$(AXE_VERSION)
# jose and jsonwebtoken for the JWT interop tests (tests/integration/node.py): node checks the
# portal's tokens, and makes a partner's, with the libraries apps really use; test-only, pinned.
JOSE_VERSION := 6.2.18
JSONWEBTOKEN_VERSION := 9.0.3
NODE_JWT := $(VENV)/node-jwt/.installed-$(JOSE_VERSION)-$(JSONWEBTOKEN_VERSION)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Authelia's files for `make compat` (a directory, relative to this one or absolute).
AUTHELIA_CORPUS ?= ../shared/compat/authelia

.PHONY: run test compat lint format fuzz system-deps clean

# Checked before anything is built, so a missing corpus is one line, not a venv and a traceback.
ifneq ($(filter compat,$(MAKECMDGOALS)),)
ifeq ($(wildcard $(AUTHELIA_CORPUS)/config.template.yml),)
$(error make compat: the Authelia corpus is missing: set AUTHELIA_CORPUS to a copy of authelia's files (looked in $(AUTHELIA_CORPUS)))
endif
endif

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

# Secrets for the demo: generated once, mode 0600, never committed (var/ is ignored).
$(SECRETS)/%: | $(VENV)/.installed
	@mkdir -p -m 700 $(SECRETS)
	@umask 077 && $(BIN)/portal crypto rand --length 64 > $@.tmp && mv $@.tmp $@
	@echo "generated $@"

var/users_database.yml: | config/users_database.yml
	@mkdir -p var
	@install -m 600 config/users_database.yml $@
	@echo "copied the demo users to $@"

run: $(VENV)/.installed $(SECRETS)/jwt_secret $(SECRETS)/storage_encryption_key \
		$(SECRETS)/session_secret var/users_database.yml
	PORTAL_IDENTITY_VALIDATION_RESET_PASSWORD_JWT_SECRET_FILE=$(SECRETS)/jwt_secret \
	PORTAL_STORAGE_ENCRYPTION_KEY_FILE=$(SECRETS)/storage_encryption_key \
	PORTAL_SESSION_SECRET_FILE=$(SECRETS)/session_secret \
	$(BIN)/portal serve --config config/configuration.yml

# The servers the integration and browser tests start on loopback ports.
system-deps:
	@missing=""; \
	for f in $(SYSTEM_BINARIES); do \
		[ -x "$$f" ] || missing="$$missing $$f"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing $(APT_PACKAGES) (missing:$$missing)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
			$(APT_PACKAGES) >/dev/null; \
	fi

# mypy reads what to check from pyproject.toml's [tool.mypy]: portal/, tests/ and bench/, strict.
# `ruff format` is the layout: `make format` applies it, lint fails on anything it would change.
# portal.i18n_check: every message extracted and translated in every catalog, no fuzzy entry, no
# text outside gettext in a checked template (`python -m portal.i18n_check --update` merges).
lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m portal.i18n_check

format: $(VENV)/.installed-test
	$(BIN)/ruff format .

# npm comes with the machine's Node.js (NodeSource's package provides it and conflicts with
# Debian's npm package): Debian's npm is installed only where there is no npm at all.
$(AXE): | system-deps
	@command -v npm >/dev/null || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		npm >/dev/null; }
	npm install --prefix $(VENV)/axe --no-audit --no-fund --no-save --loglevel=error \
		axe-core@$(AXE_VERSION)
	touch $@

$(NODE_JWT): | $(AXE)
	npm install --prefix $(VENV)/node-jwt --no-audit --no-fund --no-save --loglevel=error \
		jose@$(JOSE_VERSION) jsonwebtoken@$(JSONWEBTOKEN_VERSION)
	touch $@

test: $(VENV)/.installed-test system-deps lint $(AXE) $(NODE_JWT)
	$(BIN)/pytest

# 100,000 generated requests against the portal on 127.0.0.1 (bench/fuzz.py prints the figures;
# bounded by --requests and --max-seconds), then schemathesis over GET /api/openapi.yml with
# --openapi-examples cases per operation. `make test` runs a short version of both.
FUZZ_ARGS ?= --requests 100000 --max-seconds 1800
fuzz: $(VENV)/.installed-test
	$(BIN)/python bench/fuzz.py $(FUZZ_ARGS)

# tests/compat only: Authelia's reference configuration, suite configurations, users file and
# LDAP directory, read as shipped (slapd loads the directory, hence system-deps).
compat: $(VENV)/.installed-test system-deps
	AUTHELIA_CORPUS="$(abspath $(AUTHELIA_CORPUS))" $(BIN)/pytest tests/compat

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
