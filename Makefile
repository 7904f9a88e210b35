# tritonop developer entry points. See README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: help venv tools node-build image model-repo crds cluster-build cluster-up cluster-down cluster-status lint unit test test-chaos demo demo-autoscale demo-llm demo-down kind-up clean

help:
	@echo "make demo           export a PyTorch model, serve it with real Triton, switch versions in place (the main job)"
	@echo "make demo-autoscale the autoscaler: load rises, replicas grow; load stops, replicas shrink (~2 min)"
	@echo "make demo-llm       a streaming model sized from TTFT and ITL targets as token streams rise and stop (~3 min)"
	@echo "make demo-down      stop what the demos started (load, their ModelDeployments, the demo operator)"
	@echo "make test           lint + unit + integration tests on the local cluster (CI runs it)"
	@echo "make test-chaos     fault scenarios: operator killed, control plane restarted, fuzzing (CI runs it)"
	@echo "make cluster-up     start the local control plane with fake GPU nodes (builds it once)"
	@echo "make cluster-down   stop everything cluster-up started"
	@echo "make lint           ruff + mypy"

venv: $(STAMP)

# Re-installs when pyproject.toml changes; everything the tests need comes from here.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,torch]'
	@touch $@

# Debian's prometheus (+ promtool): the autoscaler's Prometheus source is tested against it.
# The real node (docs/real-node.md): nftables, socat, util-linux (nsenter), iproute2, conntrack and
# iptables (kube-proxy), busybox-static (the test image), gcc + libseccomp-dev (runc's build),
# mmdebstrap (the Triton and operator images' Debian base).
REAL_NODE_PACKAGES := nftables socat util-linux iproute2 conntrack iptables busybox-static gcc libc6-dev libseccomp-dev mmdebstrap
tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus for the integration tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@missing=$$(for p in $(REAL_NODE_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian's $$missing for the real node's tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

# The operator image without Docker (operator/Dockerfile's recipe on a Debian base from mmdebstrap),
# as an OCI archive in dist/ to push (skopeo) or load (kind, podman). Cached per source digest.
image: venv tools
	$(PY) -m devcluster image --out dist

# The real node's kubelet, kube-proxy, containerd, runc and CNI plugins (cached once per version).
node-build: venv tools
	$(PY) -m devcluster node-build

# model_repo/mlp is exported from PyTorch code (examples/models/mlp.py); sleepy is plain Python.
MLP_VERSIONS := model_repo/mlp/1 model_repo/mlp/2 model_repo/mlp/3
model-repo: $(MLP_VERSIONS)

model_repo/mlp/1: examples/models/mlp.py | venv
	$(PY) -m tritonop repo export examples.models.mlp:build_v1 -r model_repo -m mlp --input-shape 4 --version 1
model_repo/mlp/2: examples/models/mlp.py | venv
	$(PY) -m tritonop repo export examples.models.mlp:build_v2 -r model_repo -m mlp --input-shape 4 --version 2
model_repo/mlp/3: examples/models/mlp.py | venv
	$(PY) -m tritonop repo export examples.models.mlp:build_v2 -r model_repo -m mlp --input-shape 4 --version 3 \
	  --quantize dynamic-int8

# The CRD is generated from the pydantic models; the Helm chart carries byte-identical copies of it
# and of manifests/monitoring/ (Helm reads no file outside the chart). Unit tests fail when this
# was not run.
crds: venv
	$(PY) -m tritonop.api.crd > crds/modeldeployments.tritonop.dev.yaml
	cp crds/modeldeployments.tritonop.dev.yaml charts/tritonop/crds/
	rm -rf charts/tritonop/files/monitoring && cp -r manifests/monitoring charts/tritonop/files/monitoring

# helm for the chart's tests, built from the Go module proxy like the cluster (cached once per version).
.PHONY: helm
HELM_VERSION := $(shell sed -n 's/^HELM = "\(.*\)".*/\1/p' devcluster/versions.py)
helm:
	@HELM_VERSION=$(HELM_VERSION) bash devcluster/build-binaries.sh helm

# MinIO for the S3 tests (a real S3 server holding a model repository), built the same way.
.PHONY: minio
MINIO_VERSION := $(shell sed -n 's/^MINIO = "\(.*\)".*/\1/p' devcluster/versions.py)
minio:
	@MINIO_VERSION=$(MINIO_VERSION) bash devcluster/build-binaries.sh minio

cluster-build: venv
	$(PY) -m devcluster build

cluster-up: cluster-build
	$(PY) -m devcluster up

cluster-down: venv
	$(PY) -m devcluster down

cluster-status: venv
	$(PY) -m devcluster status

lint: venv
	$(VENV)/bin/ruff check operator devcluster loadgen tests bench examples
	$(VENV)/bin/ruff format --check operator devcluster loadgen tests bench examples
	$(VENV)/bin/mypy

unit: venv helm
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# The session fixture reuses a cluster from `make cluster-up`, or starts one and stops it.
test: lint tools cluster-build node-build helm minio model-repo
	$(PY) -m pytest -m "not chaos" $(PYTEST_ARGS)

# Fault scenarios (operator killed, control plane restarted, admission fuzzing): slow; CI runs them too.
test-chaos: tools cluster-build model-repo
	$(PY) -m pytest -m chaos -s $(PYTEST_ARGS)

# The demos' operator watches only namespaces demo*, so it never meets the tests' (t-*).
demo: cluster-up
	@bash scripts/demo.sh

demo-autoscale: cluster-up
	@bash scripts/demo_autoscale.sh

demo-llm: cluster-up
	@bash scripts/demo_llm.sh

demo-down:
	@bash scripts/demo.sh stop

# Users with Docker only (cannot run on machines without a Docker engine, CI included).
kind-up:
	@bash scripts/kind-up.sh

clean: demo-down cluster-down
	rm -rf $(VENV) .devcluster
