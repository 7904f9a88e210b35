# tritonop developer entry points. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv cluster-build cluster-up cluster-down cluster-status lint unit test demo clean

help:
	@echo "make demo           start the local cluster and show it (the main job)"
	@echo "make test           lint + unit + integration tests on the local cluster (what CI runs)"
	@echo "make cluster-up     start the local control plane with fake GPU nodes (builds it once)"
	@echo "make cluster-down   stop everything cluster-up started"
	@echo "make lint           ruff + mypy"

venv: $(STAMP)

# Re-installs when pyproject.toml changes; everything the tests need comes from here.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

cluster-build: venv
	$(PY) -m devcluster build

cluster-up: cluster-build
	$(PY) -m devcluster up

cluster-down: venv
	$(PY) -m devcluster down

cluster-status: venv
	$(PY) -m devcluster status

lint: venv
	$(VENV)/bin/ruff check operator devcluster tests
	$(VENV)/bin/ruff format --check operator devcluster tests
	$(VENV)/bin/mypy

unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The session fixture reuses a cluster from `make cluster-up`, or starts one and stops it.
test: lint cluster-build
	$(PY) -m pytest $(PYTEST_ARGS)

demo: cluster-up
	@echo "--- the dev cluster: 2 fake GPU nodes (8 x nvidia.com/gpu each) and 1 CPU node"
	$(VENV)/bin/kubectl --kubeconfig .devcluster/kubeconfig get nodes -o wide
	$(VENV)/bin/kubectl --kubeconfig .devcluster/kubeconfig get nodes \
	  -o custom-columns=NAME:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu,PRODUCT:.metadata.labels.nvidia\\.com/gpu\\.product
	@echo "--- next: the tritonop operator deploys ModelDeployments here (coming with the API issue)."
	@echo "--- the cluster stays up; use it with: export KUBECONFIG=$$PWD/.devcluster/kubeconfig ; stop it with: make cluster-down"

clean: cluster-down
	rm -rf $(VENV) .devcluster
