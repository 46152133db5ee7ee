# The two commands a newcomer needs: `make run` and `make test`.
# `make reset` starts the demo afresh (deletes ./var, keeps .venv); `make clean` removes
# everything the build and the demo made, the virtualenvs included.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Linters and validators for deploy/ (hadolint, kubernetes-validate, python-hcl2, checkov):
# venvs of their own, so their pins never meet keyledger's dependencies.
DEPLOY_VENV  ?= .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.installed

.PHONY: run test lint typecheck unit browser screenshots bench reset clean deploy-tools deploy-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

$(DEPLOY_VENV)/%/.installed: deploy/tools/requirements-%.txt
	rm -rf $(DEPLOY_VENV)/$*
	mkdir -p $(DEPLOY_VENV)
	echo '*' > $(DEPLOY_VENV)/.gitignore
	$(PYTHON) -m venv $(DEPLOY_VENV)/$* || python3 -m venv $(DEPLOY_VENV)/$*
	$(DEPLOY_VENV)/$*/bin/python -m pip install --quiet -r deploy/tools/requirements-$*.txt
	touch $@

$(DEPLOY_STAMP): $(DEPLOY_VENV)/tools/.installed $(DEPLOY_VENV)/checkov/.installed
	touch $(DEPLOY_STAMP)

deploy-tools: $(DEPLOY_STAMP)

run: $(STAMP)
	$(BIN)/keyledger serve --dev

test: $(STAMP) $(DEPLOY_STAMP) browser lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check keyledger tests bench deploy
	$(BIN)/ruff format --check keyledger tests bench deploy

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy deploy/container/healthcheck.py

unit: $(STAMP) $(DEPLOY_STAMP) browser
	$(BIN)/pytest

# The browser tests (tests/browser) drive Debian's Chromium through its ChromeDriver. As root
# on Debian (as CI runs), install both with apt the first time (about 10 s; `apt-get update`
# only if the install fails without it); once they are on PATH, this does nothing. Anywhere
# else it says so in one line and the browser tests skip, each saying why. It never fails
# the build: a failed install is shown here, and the browser tests then skip (or, under
# CI=true on root Debian, fail).
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" != 0 ] || [ ! -f /etc/debian_version ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "make browser: no chromium and chromedriver on PATH, and not root on Debian: the browser tests will skip"; \
	else \
	  echo "make browser: installing Debian's chromium and chromium-driver for the browser tests"; \
	  log=$$(mktemp); \
	  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    -o DPkg::Lock::Timeout=120 chromium chromium-driver </dev/null >>"$$log" 2>&1; }; \
	  apt_install || { apt-get update -q </dev/null >>"$$log" 2>&1 && apt_install; } \
	    || { tail -n 20 "$$log"; echo "make browser: apt-get failed (above): the browser tests will skip (under CI, fail)"; }; \
	  rm -f "$$log"; \
	fi

# The console's screenshots in docs/ (README, docs/console.md), taken by the browser tests.
screenshots: $(STAMP) browser
	KEYLEDGER_SCREENSHOTS=docs/screenshots $(BIN)/pytest -q tests/browser

bench: $(STAMP)
	$(BIN)/python bench/proxy_overhead.py

# Only the deploy/ tests: the Dockerfile, Kubernetes manifests, Terraform and systemd unit.
deploy-check: $(STAMP) $(DEPLOY_STAMP)
	$(BIN)/pytest tests/deploy

# Start the demo afresh: delete ./var (journal, keys, identities, dev.env), keep .venv.
reset:
	rm -rf var

clean: reset
	rm -rf $(VENV) $(DEPLOY_VENV) .pytest_cache .mypy_cache .ruff_cache
