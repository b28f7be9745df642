# escape-fed: every setup step a fresh Debian/Ubuntu machine needs, then the job.
#   make demo   the main job: the lab federation up on this machine (root)
#   make test   the whole test suite: lint, types, every tier (root; see the README for times)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the lab and the tests need on the control machine.
DEB_PACKAGES := debootstrap systemd-container iproute2 openssh-client ca-certificates
PYTEST_ARGS ?=

TIERS := unit static install runtime roles e2e tokens
.PHONY: all deps venv demo test test-fast test-lab lint typecheck bench lab-down clean help \
	collection suite-time $(addprefix test-,$(TIERS))

all: help

help:
	@echo "make demo       bring up the lab federation (root) and show it"
	@echo "make test       lint + types + every test tier (root for the lab tier)"
	@echo "make test-fast  lint + types + the tiers without lab hosts (no root, a few minutes)"
	@echo "make test-TIER  one tier alone: $(TIERS)"
	@echo "make suite-time the last 'make test' run, tier by tier, next to its budget"
	@echo "make bench      print the benchmarks' figures"
	@echo "make lab-down   stop the lab and remove everything it made"
	@echo "make collection build the escape.fed Ansible collection (build/collection/)"

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null \
	  | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "error: installing $$missing needs root" >&2; exit 2; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "error: Python 3.11 or newer is needed (PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(BIN)/.installed

demo: deps venv
	$(BIN)/escape-fed demo

lint: venv
	$(BIN)/ruff check escape_fed tests bench roles playbooks
	$(BIN)/ruff format --check escape_fed tests bench roles playbooks

typecheck: venv
	$(BIN)/mypy

test-fast: lint typecheck
	$(BIN)/pytest -m "not lab" $(PYTEST_ARGS)

test-lab: deps venv
	$(BIN)/pytest -m lab $(PYTEST_ARGS)

# One tier alone, e.g. `make test-tokens` (the lab tiers deploy the shared lab they need).
$(addprefix test-,$(TIERS)): test-%: deps venv
	$(BIN)/pytest -m $* $(PYTEST_ARGS)

# Every tier; the per-tier times go to build/suite-time.json and are printed at the end.
test: deps lint typecheck
	@mkdir -p build; start=$$(date +%s); \
	ESCAPE_FED_SUITE_TIME=build/suite-time.json $(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	$(BIN)/python bench/suite_time.py build/suite-time.json --wall $$(( $$(date +%s) - start )); \
	exit $$rc

suite-time: venv
	$(BIN)/python bench/suite_time.py build/suite-time.json

bench: deps venv
	$(BIN)/python bench/render_bench.py
	$(BIN)/python bench/lab_bench.py
	$(BIN)/python bench/deploy_bench.py
	$(BIN)/python bench/cache_bench.py
	$(BIN)/python bench/runner_bench.py
	-$(BIN)/python bench/suite_time.py build/suite-time.json

# The escape.fed Ansible collection for site admins who run their own Ansible.
collection: venv
	$(BIN)/python -m escape_fed.collection build/collection

lab-down: venv
	$(BIN)/escape-fed lab down

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis build
