#!/usr/bin/env bash
# make demo: the local cluster (already up), the operator, and a ModelDeployment served by real
# Triton at its pods' IPs; then an in-place version switch. `make demo-down` stops the operator.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export KUBECONFIG=$ROOT/.devcluster/kubeconfig
K=".venv/bin/kubectl"
PIDFILE=.devcluster/operator.pid
LOG=.devcluster/logs/operator.log

if [[ "${1:-}" == "stop" ]]; then
  if [[ -f $PIDFILE ]] && kill -0 "$(cat $PIDFILE)" 2>/dev/null; then
    kill "$(cat $PIDFILE)"; echo "operator stopped"
  fi
  rm -f $PIDFILE
  exit 0
fi

CURRENT_STEP="start"
step() { CURRENT_STEP="$*"; printf '\n\033[1m--- %s\033[0m\n' "$*"; }
trap 'echo "demo failed during: $CURRENT_STEP (operator log: $LOG; cluster logs: .devcluster/logs/)" >&2' ERR

step "the dev cluster: 2 fake GPU nodes (8 x nvidia.com/gpu each) and 1 CPU node"
# kubectl's own table: its STATUS is the Ready condition (Ready/NotReady), as `kubectl get nodes` says it.
$K get nodes -L nvidia.com/gpu.count,nvidia.com/gpu.product

step "install the CRD, the operator's namespace, ServiceAccount and least-privilege ClusterRole"
$K apply --server-side -k crds/
$K apply --server-side -f manifests/namespace.yaml -f manifests/rbac.yaml

if ! { [[ -f $PIDFILE ]] && kill -0 "$(cat $PIDFILE)" 2>/dev/null; }; then
  step "start the operator as its ServiceAccount tritonop-system/tritonop (token from TokenRequest; log: $LOG)"
  TOKEN=$($K create token tritonop -n tritonop-system --duration=24h)
  SERVER=$($K config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  SA_KUBECONFIG=.devcluster/operator-sa.kubeconfig
  cat >"$SA_KUBECONFIG" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: dev, cluster: {server: "$SERVER", certificate-authority: "$ROOT/.devcluster/pki/ca.crt"}}]
users: [{name: tritonop, user: {token: "$TOKEN"}}]
contexts: [{name: dev, context: {cluster: dev, user: tritonop}}]
current-context: dev
KUBECONFIG
  chmod 600 "$SA_KUBECONFIG"
  nohup .venv/bin/python -m tritonop run --kubeconfig "$SA_KUBECONFIG" --metrics-port 0 --liveness-port 0 \
    --resync-seconds 10 >"$LOG" 2>&1 &
  echo $! >$PIDFILE
fi

step "kubectl apply a ModelDeployment (examples/sleepy.yaml)"
$K create namespace demo --dry-run=client -o yaml | $K apply -f - >/dev/null
sed "s|/REPO_ROOT|$ROOT|" examples/sleepy.yaml | $K apply -f -
$K wait md/sleepy -n demo --for=condition=Ready --timeout=120s
$K get md -n demo
$K get pods -n demo -o wide

infer_each_pod() {
  for ip in $($K get pods -n demo -l app.kubernetes.io/instance=sleepy -o jsonpath='{.items[*].status.podIP}'); do
    printf '%s: ' "$ip"
    curl -s -X POST "http://$ip:8000/v2/models/sleepy/infer" -w '  (%{time_total}s)' \
      -d '{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}' \
      || { echo "inference at $ip failed"; exit 1; }
    echo
  done
}

step "inference at each pod IP (real Triton); VERSION says which version answered, then the latency"
infer_each_pod

step "switch to version 3 in place (no pod restarts)"
$K patch md sleepy -n demo --type merge -p '{"spec":{"model":{"version":3}}}'
$K wait md/sleepy -n demo --for=jsonpath='{.status.activeVersion}'=3 --timeout=120s
$K wait md/sleepy -n demo --for=condition=Ready --timeout=120s
$K get md -n demo
$K get pods -n demo
infer_each_pod
$K describe md sleepy -n demo | sed -n '/^Events:/,$p'

step "done. The cluster and operator keep running: export KUBECONFIG=$KUBECONFIG"
echo "stop the operator with 'make demo-down', the cluster with 'make cluster-down'"
