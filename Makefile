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

.PHONY: run test lint typecheck unit bench reset clean deploy-tools deploy-check

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

test: $(STAMP) $(DEPLOY_STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check keyledger tests bench deploy
	$(BIN)/ruff format --check keyledger tests bench deploy

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy deploy/container/healthcheck.py

unit: $(STAMP) $(DEPLOY_STAMP)
	$(BIN)/pytest

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
