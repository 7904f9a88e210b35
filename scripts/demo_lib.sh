# Shared by scripts/demo.sh (make demo, make demo-down) and scripts/demo_autoscale.sh
# (make demo-autoscale). Sourced, not run.
#
# The demos run one operator process, as the ServiceAccount tritonop-system/tritonop, watching
# only the namespaces demo* (the test suite's operators watch t-* on the same dev cluster, so
# the two never reconcile the same object). Everything a demo starts is recorded by pid under
# .devcluster/demo/ and stopped by that pid.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
export KUBECONFIG=$ROOT/.devcluster/kubeconfig
export KUBECTL=$ROOT/.venv/bin/kubectl
export PYTHONUNBUFFERED=1
K=$KUBECTL
PY=$ROOT/.venv/bin/python
DEMO_DIR=$ROOT/.devcluster/demo
OPERATOR_PIDFILE=$DEMO_DIR/operator.pid
LOAD_PIDFILE=$DEMO_DIR/load.pid
OPERATOR_LOG=$ROOT/.devcluster/logs/demo-operator.log
DEMO_NAMESPACES="demo*"
mkdir -p "$DEMO_DIR" "$ROOT/.devcluster/logs"

DEMO_STARTED=$EPOCHREALTIME
CURRENT_STEP="start"
step() {
  CURRENT_STEP="$*"
  printf '\n\033[1m--- [%5.1fs] %s\033[0m\n' "$(elapsed)" "$*"
}
elapsed() { awk -v now="$EPOCHREALTIME" -v t0="$DEMO_STARTED" 'BEGIN { printf "%.1f", now - t0 }'; }
on_error() { echo "demo failed during: $CURRENT_STEP (operator log: $OPERATOR_LOG; cluster logs: .devcluster/logs/)" >&2; }

# pid_is PIDFILE TEXT...: the recorded process is alive and its command line contains every
# TEXT (a pid reused by some other process is never signalled).
pid_is() {
  local pid cmdline text
  [[ -f $1 ]] || return 1
  pid=$(cat "$1")
  [[ -r /proc/$pid/cmdline ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline")
  for text in "${@:2}"; do [[ $cmdline == *"$text"* ]] || return 1; done
}

# stop_pidfile PIDFILE PATTERN WHAT: SIGTERM, wait up to 10 s, then SIGKILL; by pid only.
stop_pidfile() {
  local pid
  if pid_is "$1" "$2"; then
    pid=$(cat "$1")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    echo "$3 stopped (pid $pid)"
  fi
  rm -f "$1"
}

require_cluster() {
  if ! $PY -m devcluster status >/dev/null 2>&1; then
    echo "the dev cluster is not up: run 'make cluster-up' (or 'make demo', which starts it)" >&2
    exit 1
  fi
}

install_crd() {
  step "install the CRD, the operator's namespace, ServiceAccount and least-privilege ClusterRole"
  $K apply --server-side --force-conflicts -k crds/
  $K apply --server-side --force-conflicts -f manifests/namespace.yaml -f manifests/rbac.yaml
  $K wait --for=condition=Established crd/modeldeployments.tritonop.dev --timeout=60s >/dev/null
}

# A previous demo's operator is stopped (SIGTERM now, waited for in start_operator) before
# anything is deleted, and a fresh one started after: it runs this checkout's code, and
# remembers nothing of objects deleted while it ran (an operator that missed a DELETED event
# would keep re-creating a deleted object's Deployment).
OLD_OPERATOR_PID=
stop_operator() {
  if pid_is "$OPERATOR_PIDFILE" "-m tritonop run"; then
    OLD_OPERATOR_PID=$(cat "$OPERATOR_PIDFILE")
    step "stop the previous demo operator, pid $OLD_OPERATOR_PID (each demo starts its own)"
    kill "$OLD_OPERATOR_PID" 2>/dev/null || true
  fi
  rm -f "$OPERATOR_PIDFILE"
}

start_operator() {
  if [[ -n $OLD_OPERATOR_PID ]]; then
    for _ in $(seq 100); do kill -0 "$OLD_OPERATOR_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$OLD_OPERATOR_PID" 2>/dev/null && kill -9 "$OLD_OPERATOR_PID" 2>/dev/null || true
  fi
  step "start the operator as ServiceAccount tritonop-system/tritonop, watching only namespaces $DEMO_NAMESPACES (log: $OPERATOR_LOG)"
  local token server sa_kubeconfig=$DEMO_DIR/operator-sa.kubeconfig
  token=$($K create token tritonop -n tritonop-system --duration=24h)
  server=$($K config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  (umask 077; cat >"$sa_kubeconfig" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters: [{name: dev, cluster: {server: "$server", certificate-authority: "$ROOT/.devcluster/pki/ca.crt"}}]
users: [{name: tritonop, user: {token: "$token"}}]
contexts: [{name: dev, context: {cluster: dev, user: tritonop}}]
current-context: dev
KUBECONFIG
  )
  # Its own session (setsid), so a Ctrl-C in the demo's terminal does not stop it.
  setsid nohup "$PY" -m tritonop run --kubeconfig "$sa_kubeconfig" --namespace="$DEMO_NAMESPACES" \
    --metrics-port 0 --liveness-port 0 --resync-seconds 10 --autoscale-report-seconds 2 \
    >>"$OPERATOR_LOG" 2>&1 </dev/null &
  echo $! >"$OPERATOR_PIDFILE"
  echo "operator pid $(cat "$OPERATOR_PIDFILE")"
}

# delete_previous NAMESPACE NAME: the namespace exists, and a previous run's ModelDeployment is
# deleted (its pods go with it, by garbage collection, while the demo goes on);
# wait_previous_gone NAMESPACE NAME: waits until those pods are gone, so that every run starts
# from the same place.
delete_previous() {
  $K create namespace "$1" --dry-run=client -o yaml | $K apply -f - >/dev/null
  if $K get md "$2" -n "$1" >/dev/null 2>&1; then
    step "delete the previous run's ModelDeployment $1/$2 (its pods go with it)"
    $K delete md "$2" -n "$1" --wait=true
  fi
}
wait_previous_gone() {
  local left
  left=$($K get deployment,pods -n "$1" -l "app.kubernetes.io/instance=$2" -o name)
  if [[ -n $left ]]; then
    echo "waiting for the previous run's $(echo "$left" | wc -l) object(s) (Deployment, pods) to go"
    # shellcheck disable=SC2086  # one argument per object
    $K wait --for=delete -n "$1" $left --timeout=90s >/dev/null
  fi
}

print_total() {
  printf '\n\033[1m=== %s finished in %.1f s\033[0m\n' "$1" "$(elapsed)"
}

# The autoscaling demos' shared steps (make demo-autoscale, make demo-llm), with NS, MODEL, REPO
# and PIDFILE set by the script.
# apply_example EXAMPLE: the model's manifest written and the repository validated, then the
# example ModelDeployment (its /DEMO_REPO pointed at REPO) applied, once the previous run's pods
# are gone, and Ready.
apply_example() {
  $PY -m tritonop repo manifest "$REPO" "$MODEL" 1
  $PY -m tritonop repo validate "$REPO"
  sed -n '/^spec:/,$p' "$1"
  wait_previous_gone "$NS" "$MODEL"
  sed "s|/DEMO_REPO|$REPO|" "$1" | $K apply -f -
  $K wait "md/$MODEL" -n "$NS" --for=condition=Ready --timeout=120s
}
# run_load WHAT COMMAND...: the load generator in the background (recorded in PIDFILE), waited for.
run_load() {
  local what=$1
  shift
  "$@" &
  echo $! >"$PIDFILE"
  wait "$(cat "$PIDFILE")" || { echo "the $what demo did not go as expected (see above)" >&2; exit 1; }
  rm -f "$PIDFILE"
}
# scaled_events DEMO: the autoscaler's decisions (Events), then the demo's total time.
scaled_events() {
  step "the autoscaler's decisions (Events)"
  local md_uid
  md_uid=$($K get md "$MODEL" -n "$NS" -o jsonpath='{.metadata.uid}')
  $K get events -n "$NS" --field-selector "involvedObject.uid=$md_uid,reason=Scaled" \
    --sort-by=.lastTimestamp -o custom-columns=LAST:.lastTimestamp,MESSAGE:.message
  print_total "$1"
  echo "make demo-down stops the demos (operator, load, ModelDeployments)"
}
