#!/usr/bin/env bash
# make demo: the product's story on the local cluster (already up). A PyTorch model is exported
# as version 1 of a Triton model repository, validated, served by a 2-replica ModelDeployment
# (real Triton at each pod's IP); a dynamically quantized version 2 is exported and switched to
# in place under load (no pod restarts, no failed requests); then `kubectl get md` and the Events.
#   bash scripts/demo.sh        the demo (re-runnable: it starts again from a fresh export)
#   bash scripts/demo.sh stop   make demo-down: stops what the demos started (load, ModelDeployments, operator)
source "$(dirname "$0")/demo_lib.sh"

if [[ "${1:-}" == "stop" ]]; then
  stop_pidfile "$DEMO_DIR/autoscale.pid" "examples.demo_load autoscale" "autoscale demo"
  stop_pidfile "$DEMO_DIR/llm.pid" "examples.demo_load llm" "LLM demo"
  stop_pidfile "$LOAD_PIDFILE" "examples.demo_load" "demo load generator"
  if $PY -m devcluster status >/dev/null 2>&1; then
    $K delete md mlp -n demo --ignore-not-found --wait=true
    $K delete md sleepy100 -n demo-autoscale --ignore-not-found --wait=true
    $K delete md tokens -n demo-llm --ignore-not-found --wait=true
  fi
  stop_pidfile "$OPERATOR_PIDFILE" "-m tritonop run" "demo operator"
  exit 0
fi

NS=demo
REPO=$ROOT/.devcluster/demo-repo   # not model_repo/: the tests use that one
trap on_error ERR
trap 'stop_pidfile "$LOAD_PIDFILE" examples.demo_load "demo load generator" >/dev/null' EXIT
require_cluster

step "the dev cluster: 2 fake GPU nodes (8 x nvidia.com/gpu each) and 1 CPU node"
$K get nodes -L nvidia.com/gpu.count,nvidia.com/gpu.product

install_crd
stop_operator
delete_previous $NS mlp
start_operator

step "export a PyTorch model (examples/models/mlp.py:build_v1) as version 1 of $REPO"
rm -rf "$REPO/mlp"
echo "\$ tritonop repo export examples.models.mlp:build_v1 -r $REPO -m mlp --input-shape 4"
PYTHONWARNINGS=ignore $PY -m tritonop repo export examples.models.mlp:build_v1 -r "$REPO" -m mlp --input-shape 4

step "validate the repository (layout, config.pbtxt, sha256 manifests)"
$PY -m tritonop repo validate "$REPO"

step "kubectl apply a ModelDeployment for it: 2 replicas (examples/mlp.yaml)"
wait_previous_gone $NS mlp
sed "s|/DEMO_REPO|$REPO|" examples/mlp.yaml | $K apply -f -
# While the replicas start, the next version is exported in the background (its output is shown
# in its own step below): the demo has a minute on two cores, and both take a while.
PYTHONWARNINGS=ignore $PY -m tritonop repo export examples.models.mlp:build_v2 -r "$REPO" -m mlp --input-shape 4 \
  --quantize dynamic-int8 >"$DEMO_DIR/export-v2.log" 2>&1 &
EXPORT_PID=$!
$K wait md/mlp -n $NS --for=condition=Ready --timeout=120s
$K get md -n $NS
$K get pods -n $NS -o wide

step "inference at each replica's pod IP (real Triton; model_version says which version answered)"
IPS=$($K get pods -n $NS -l app.kubernetes.io/instance=mlp -o jsonpath='{.items[*].status.podIP}')
for ip in $IPS; do
  printf '%s: ' "$ip"
  curl -sf -X POST "http://$ip:8000/v2/models/mlp/infer" \
    -d '{"inputs":[{"name":"INPUT0","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}' \
    || { echo "inference at $ip failed"; exit 1; }
  echo
done
PODS_BEFORE=$($K get pods -n $NS -l app.kubernetes.io/instance=mlp \
  -o jsonpath='{range .items[*]}{.metadata.name} restarts={.status.containerStatuses[0].restartCount}{"\n"}{end}')

step "export version 2: same architecture, new weights, Linear layers quantized to dynamic int8 (ran while the replicas started)"
echo "\$ tritonop repo export examples.models.mlp:build_v2 -r $REPO -m mlp --input-shape 4 --quantize dynamic-int8"
wait $EXPORT_PID || { cat "$DEMO_DIR/export-v2.log"; echo "export of version 2 failed" >&2; exit 1; }
cat "$DEMO_DIR/export-v2.log"
$PY -m tritonop repo list "$REPO"

step "switch to version 2 in place, under load (10 requests/s at each pod; one line per second)"
# shellcheck disable=SC2086  # one argument per pod IP
$PY -m examples.demo_load switch --model mlp $IPS &
echo $! >"$LOAD_PIDFILE"
$K patch md mlp -n $NS --type merge -p '{"spec":{"model":{"version":2}}}'
$K wait md/mlp -n $NS --for=jsonpath='{.status.activeVersion}'=2 --timeout=120s
$K wait md/mlp -n $NS --for=condition=Ready --timeout=120s
LOAD_PID=$(cat "$LOAD_PIDFILE")
kill -TERM "$LOAD_PID"
if ! wait "$LOAD_PID"; then
  echo "requests failed during the in-place switch" >&2
  exit 1
fi
rm -f "$LOAD_PIDFILE"

step "the same pods before and after (no restarts)"
PODS_AFTER=$($K get pods -n $NS -l app.kubernetes.io/instance=mlp \
  -o jsonpath='{range .items[*]}{.metadata.name} restarts={.status.containerStatuses[0].restartCount}{"\n"}{end}')
echo "$PODS_AFTER"
if [[ "$PODS_BEFORE" != "$PODS_AFTER" ]]; then
  printf 'pods changed during the switch:\nbefore:\n%s\nafter:\n%s\n' "$PODS_BEFORE" "$PODS_AFTER" >&2
  exit 1
fi

step "kubectl get md, and the Events"
$K get md -n $NS
$K describe md mlp -n $NS | sed -n '/^Events:/,$p'

print_total "make demo"
echo "The cluster and the demo operator keep running: export KUBECONFIG=$KUBECONFIG"
echo "make demo-autoscale shows the autoscaler; make demo-down stops the demos; make cluster-down the cluster"
