#!/usr/bin/env bash
# make demo-llm: a streaming model sized from its token targets on the local cluster (already up).
# The token generator (model_repo/tokens: one engine loop shared by every running request, one
# response per token, the vLLM backend's metric families) with p95 targets TTFT 1000 ms and ITL
# 60 ms; one answer streamed token by token; then open-loop gRPC streams rise, ITL goes over its
# target and READY grows on the token figures; the streams stop and READY shrinks back. About
# three minutes, with a summary.
source "$(dirname "$0")/demo_lib.sh"

NS=demo-llm
MODEL=tokens
REPO=$ROOT/.devcluster/demo-llm-repo
PIDFILE=$DEMO_DIR/llm.pid
trap on_error ERR
trap 'stop_pidfile "$PIDFILE" "examples.demo_load llm" "streaming load generator" >/dev/null' EXIT
require_cluster
install_crd
stop_operator
delete_previous $NS $MODEL
start_operator

step "the token generator: model_repo/tokens ($REPO/$MODEL)"
rm -rf "${REPO:?}/$MODEL"
mkdir -p "$REPO/$MODEL/1"
cp model_repo/tokens/config.pbtxt "$REPO/$MODEL/"
cp model_repo/tokens/1/model.py "$REPO/$MODEL/1/"
step "kubectl apply a ModelDeployment with token targets: p95 TTFT 1000 ms, ITL 60 ms, 1 to 4 replicas (examples/tokens-autoscale.yaml)"
apply_example examples/tokens-autoscale.yaml

step "one answer streamed, then 2 streams/s for 15 s, 16 streams/s for 60 s (24 tokens each), then none; md -o wide every 2 s"
echo "(CLIENT-TTFT and CLIENT-ITL: p95 over the last 4 s at the client; TTFT and ITL: the operator's, from the pods' histograms)"
run_load LLM $PY -m examples.demo_load llm --namespace $NS --name $MODEL
scaled_events "make demo-llm"
