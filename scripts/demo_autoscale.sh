#!/usr/bin/env bash
# make demo-autoscale: the autoscaler in a closed loop on the local cluster (already up). A
# fixed-time model (100 ms per request, so one replica serves 10 requests/s, as a GPU would)
# with autoscaling on; load rises, P95 goes over TARGET-LAT and READY grows; the load stops and
# READY shrinks back to minReplicas. Ends by itself (about two minutes) with a summary.
source "$(dirname "$0")/demo_lib.sh"

NS=demo-autoscale
MODEL=sleepy100
REPO=$ROOT/.devcluster/demo-autoscale-repo
PIDFILE=$DEMO_DIR/autoscale.pid
trap on_error ERR
trap 'stop_pidfile "$PIDFILE" "examples.demo_load autoscale" "autoscale load generator" >/dev/null' EXIT
require_cluster
install_crd
stop_operator
delete_previous $NS $MODEL
start_operator

step "the fixed-time model: model_repo/sleepy's code, 1 request per batch, 100 ms per batch ($REPO/$MODEL)"
rm -rf "${REPO:?}/$MODEL"
mkdir -p "$REPO/$MODEL/1"
sed -e 's/max_batch_size: 8/max_batch_size: 1/' -e 's/string_value: "20"/string_value: "100"/' \
  model_repo/sleepy/config.pbtxt >"$REPO/$MODEL/config.pbtxt"
cp model_repo/sleepy/1/model.py "$REPO/$MODEL/1/"
step "kubectl apply a ModelDeployment with autoscaling: 1 to 8 replicas, p95 target 400 ms (examples/sleepy-autoscale.yaml)"
apply_example examples/sleepy-autoscale.yaml

step "load: 4 requests/s for 10 s, 25 requests/s for 45 s (needs 3+ replicas), then none; the md every 2 s"
echo "(P95 is Triton's own summary over its last minute, as status reports it; CLIENT-P95 is the last 2 s at the client)"
run_load autoscale $PY -m examples.demo_load autoscale --namespace $NS --name $MODEL \
  --low-rate 4 --low-seconds 10 --high-rate 25 --high-seconds 45 --min-replicas 1
scaled_events "make demo-autoscale"
