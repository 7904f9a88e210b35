#!/usr/bin/env bash
# make kind-up: for users with Docker and kind (it cannot run on machines without a Docker
# engine, such as this project's CI). Builds the operator image, loads it into a kind cluster,
# installs the CRD and operator, and applies a CPU-only example.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v docker >/dev/null && docker info >/dev/null 2>&1 || { echo "kind-up needs a running Docker engine"; exit 1; }
command -v kind >/dev/null || { echo "kind-up needs kind (https://kind.sigs.k8s.io)"; exit 1; }
kind create cluster --name tritonop --config deploy/kind/kind-config.yaml
docker build -f operator/Dockerfile -t ghcr.io/tritonop/tritonop:0.1.0 .
kind load docker-image ghcr.io/tritonop/tritonop:0.1.0 --name tritonop
kubectl apply --server-side -k manifests/
kubectl -n tritonop-system rollout status deploy/tritonop --timeout=180s
kubectl apply -f deploy/kind/sleepy-cpu.yaml
kubectl wait md/sleepy --for=condition=Ready --timeout=600s   # the Triton image is large: first pull takes minutes
kubectl get md
