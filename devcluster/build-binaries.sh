#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok) from the Go module proxy into a cache outside the repo; with the
# argument `helm` (make helm), helm for the chart's tests the same way; with `minio` (make
# minio), the S3-compatible server the S3 tests serve models from; with `node` (python -m
# devcluster node-up), what a real node runs: kubelet and kube-proxy, containerd 2.x and its
# runc shim, runc, the CNI plugins and the pause binary (see docs/real-node.md).
# Each component is built once per version; later runs only check the files exist.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
MINIO_VERSION="${MINIO_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
RUNC_VERSION="${RUNC_VERSION:-v1.5.3}"
CNI_PLUGINS_VERSION="${CNI_PLUGINS_VERSION:-v1.10.0}"
CACHE="${TRITONOP_CACHE:-$HOME/.cache/tritonop}"
BIN="$CACHE/bin"
SRC="$CACHE/src"
mkdir -p "$BIN" "$SRC"
# GOFLAGS from the caller are kept (e.g. GOFLAGS=-p=1 on a busy machine).
export CGO_ENABLED=0 GOFLAGS="-mod=mod${GOFLAGS:+ $GOFLAGS}"

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# go build prints nothing while compiling; -x would be too noisy, so print a
# heartbeat with the number of packages compiled so far.
with_progress() {
  local what="$1"; shift
  local start=$SECONDS
  local workdir; workdir=$(mktemp -d)
  # "$1 $2" is "go build": -v makes it name each package as it compiles.
  ( "${@:1:2}" -v "${@:3}" 2>"$workdir/log" ) &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 15 &
    wait $! || true
    kill -0 "$pid" 2>/dev/null || break
    log "$what: $(wc -l <"$workdir/log") packages compiled, $((SECONDS - start))s"
  done
  if ! wait "$pid"; then
    tail -40 "$workdir/log" >&2
    rm -rf "$workdir"
    log "$what: FAILED"
    return 1
  fi
  rm -rf "$workdir"
  log "$what: done in $((SECONDS - start))s"
}

# In the current directory: a throwaway module that requires MODULE@VERSION (so that module's own
# replace directives do not apply) and imports PKG, its dependencies resolved from the proxy.
wrapper_module() {
  local name="$1" module="$2" version="$3" pkg="$4"
  [[ -f go.mod ]] || go mod init "tritonop.dev/devcluster/$name" >/dev/null 2>&1
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >tools.go
  go get "$module@$version" >/dev/null 2>&1
  go mod tidy >/dev/null 2>&1 || go mod tidy
}

# In the current directory: a wrapper module that requires k8s.io/kubernetes and replaces every
# staging module with its published v0.x tag, importing the commands given as arguments.
kubernetes_module() {
  local staging_version="v0.${K8S_VERSION#v1.}"
  go mod download -json "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
  local upstream_mod
  upstream_mod="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$K8S_VERSION.mod"
  {
    echo "module tritonop.dev/devcluster/kubernetes"
    echo
    echo "go $(awk '/^go /{print $2; exit}' "$upstream_mod")"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    # every staging module k8s.io/kubernetes replaces with ./staging/... is
    # published on the proxy at the matching v0.x tag.
    sed -n '/^replace (/,/^)/p' "$upstream_mod" | awk -v v="$staging_version" '/=>/ {print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >go.mod
  {
    printf '//go:build tools\n\npackage tools\n\nimport (\n'
    local cmd
    for cmd in "$@"; do printf '\t_ "%s"\n' "$cmd"; done
    printf ')\n'
  } >tools.go
  log "resolving kubernetes dependencies"
  go mod tidy >/dev/null 2>&1 || go mod tidy
}

kubernetes_ldflags() {
  local major minor
  major="${K8S_VERSION#v}"; major="${major%%.*}"
  minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
  local vpkg=k8s.io/component-base/version
  echo "-s -w -X $vpkg.gitVersion=$K8S_VERSION -X $vpkg.gitMajor=$major -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean -X $vpkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}

build_kubernetes() {
  local out="$BIN/kubernetes-$K8S_VERSION"
  if [[ -x "$out/kube-apiserver" && -x "$out/kube-controller-manager" && -x "$out/kube-scheduler" ]]; then
    return 0
  fi
  log "building kubernetes $K8S_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler); first build takes a while"
  local mod="$SRC/kubernetes-$K8S_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    local cmds=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
    kubernetes_module "${cmds[@]}"
    mkdir -p "$out.tmp"
    with_progress "kubernetes $K8S_VERSION" go build -trimpath -ldflags "$(kubernetes_ldflags)" -o "$out.tmp/" "${cmds[@]}"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# The real node's Kubernetes side: kubelet and kube-proxy, from the same module as the control plane.
build_kubernetes_node() {
  local out="$BIN/kubernetes-node-$K8S_VERSION"
  [[ -x "$out/kubelet" && -x "$out/kube-proxy" && -x "$out/pause" ]] && return 0
  log "building kubelet and kube-proxy $K8S_VERSION (shares most packages with the control plane's build)"
  local mod="$SRC/kubernetes-node-$K8S_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    local cmds=(k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
    kubernetes_module "${cmds[@]}"
    mkdir -p "$out.tmp"
    with_progress "kubelet+kube-proxy $K8S_VERSION" go build -trimpath -ldflags "$(kubernetes_ldflags)" -o "$out.tmp/" "${cmds[@]}"
    # The sandbox ("pause") container's binary: kubernetes' own build/pause/linux/pause.c, static.
    local pause_src
    pause_src="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c"
    cc -Os -Wall -Werror -static -DVERSION="$K8S_VERSION-tritonop" -o "$out.tmp/pause" "$pause_src"
    strip "$out.tmp/pause"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# containerd 2.x: the daemon (with its CRI plugin), the runc v2 shim and ctr; no cgo (no btrfs).
build_containerd() {
  local out="$BIN/containerd-$CONTAINERD_VERSION"
  [[ -x "$out/containerd" && -x "$out/containerd-shim-runc-v2" && -x "$out/ctr" ]] && return 0
  log "building containerd $CONTAINERD_VERSION (containerd, containerd-shim-runc-v2, ctr)"
  local mod="$SRC/containerd-$CONTAINERD_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    local c=github.com/containerd/containerd/v2
    wrapper_module containerd "$c" "$CONTAINERD_VERSION" "$c/cmd/containerd"
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/cmd/containerd"\n\t_ "%s/cmd/containerd-shim-runc-v2"\n\t_ "%s/cmd/ctr"\n)\n' "$c" "$c" "$c" >tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    local ldflags="-s -w -X $c/version.Version=$CONTAINERD_VERSION -X $c/version.Package=$c -X $c/version.Revision=tritonop-proxy-build"
    mkdir -p "$out.tmp"
    with_progress "containerd $CONTAINERD_VERSION" go build -trimpath -tags "urfave_cli_no_docs no_btrfs no_devmapper no_zfs" -ldflags "$ldflags" -o "$out.tmp/" "$c/cmd/containerd" "$c/cmd/ctr"
    with_progress "containerd-shim-runc-v2 $CONTAINERD_VERSION" go build -trimpath -tags "urfave_cli_no_docs no_grpc" -ldflags "$ldflags" -o "$out.tmp/" "$c/cmd/containerd-shim-runc-v2"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# runc needs cgo (its nsenter is C) and libseccomp (Debian's libseccomp-dev) for seccomp profiles.
build_runc() {
  local out="$BIN/runc-$RUNC_VERSION"
  [[ -x "$out/runc" ]] && return 0
  log "building runc $RUNC_VERSION (cgo, with seccomp: needs gcc and libseccomp-dev)"
  local mod="$SRC/runc-$RUNC_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    wrapper_module runc github.com/opencontainers/runc "$RUNC_VERSION" github.com/opencontainers/runc
    mkdir -p "$out.tmp"
    CGO_ENABLED=1 with_progress "runc $RUNC_VERSION" go build -trimpath -tags "seccomp urfave_cli_no_docs" \
      -ldflags "-s -w -X main.version=${RUNC_VERSION#v} -X main.gitCommit=tritonop-proxy-build" -o "$out.tmp/runc" github.com/opencontainers/runc
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

# The CNI plugins the node's network needs: bridge, host-local IPAM, loopback, portmap.
build_cni_plugins() {
  local out="$BIN/cni-plugins-$CNI_PLUGINS_VERSION"
  [[ -x "$out/bridge" && -x "$out/host-local" && -x "$out/loopback" && -x "$out/portmap" ]] && return 0
  log "building CNI plugins $CNI_PLUGINS_VERSION (bridge, host-local, loopback, portmap)"
  local mod="$SRC/cni-plugins-$CNI_PLUGINS_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    local p=github.com/containernetworking/plugins/plugins
    wrapper_module cni-plugins github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" "$p/main/bridge"
    printf '//go:build tools\n\npackage tools\n\nimport (\n\t_ "%s/main/bridge"\n\t_ "%s/ipam/host-local"\n\t_ "%s/main/loopback"\n\t_ "%s/meta/portmap"\n)\n' "$p" "$p" "$p" "$p" >tools.go
    go mod tidy >/dev/null 2>&1 || go mod tidy
    mkdir -p "$out.tmp"
    with_progress "CNI plugins $CNI_PLUGINS_VERSION" go build -trimpath \
      -ldflags "-s -w -X github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion=$CNI_PLUGINS_VERSION" \
      -o "$out.tmp/" "$p/main/bridge" "$p/ipam/host-local" "$p/main/loopback" "$p/meta/portmap"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_etcd() {
  local out="$BIN/etcd-$ETCD_VERSION"
  [[ -x "$out/etcd" ]] && return 0
  log "building etcd $ETCD_VERSION"
  local mod="$SRC/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    wrapper_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" go.etcd.io/etcd/server/v3
    mkdir -p "$out.tmp"
    with_progress "etcd $ETCD_VERSION" go build -trimpath -ldflags "-s -w" -o "$out.tmp/etcd" go.etcd.io/etcd/server/v3
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_kwok() {
  local out="$BIN/kwok-$KWOK_VERSION"
  [[ -x "$out/kwok" ]] && return 0
  log "building kwok $KWOK_VERSION"
  local mod="$SRC/kwok-$KWOK_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    wrapper_module kwok sigs.k8s.io/kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
    mkdir -p "$out.tmp"
    with_progress "kwok $KWOK_VERSION" go build -trimpath -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" -o "$out.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
    # kwok v0.8 ships its stage files (pod/node lifecycles) in the module; keep a copy.
    cp -r "$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage" "$out.tmp/stage"
    chmod -R u+w "$out.tmp/stage"
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_helm() {
  local out="$BIN/helm-$HELM_VERSION"
  [[ -x "$out/helm" ]] && return 0
  log "building helm $HELM_VERSION"
  local mod="$SRC/helm-$HELM_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    wrapper_module helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
    # As helm's own Makefile: the version it reports, and the Kubernetes version that
    # `helm template`/`helm lint` assume without a cluster (client-go v0.N is Kubernetes 1.N).
    local client_go minor
    client_go="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
    minor="${client_go#v0.}"; minor="${minor%%.*}"
    local h=helm.sh/helm/v3
    local ldflags="-s -w -X $h/internal/version.version=$HELM_VERSION -X $h/internal/version.gitTreeState=clean"
    ldflags+=" -X $h/pkg/chartutil.k8sVersionMajor=1 -X $h/pkg/chartutil.k8sVersionMinor=$minor"
    ldflags+=" -X $h/pkg/lint/rules.k8sVersionMajor=1 -X $h/pkg/lint/rules.k8sVersionMinor=$minor"
    mkdir -p "$out.tmp"
    with_progress "helm $HELM_VERSION" go build -trimpath -ldflags "$ldflags" -o "$out.tmp/helm" helm.sh/helm/v3/cmd/helm
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

build_minio() {
  local out="$BIN/minio-$MINIO_VERSION"
  [[ -x "$out/minio" ]] && return 0
  log "building minio $MINIO_VERSION (the S3 server for the S3 tests; a large build, about 10 minutes on 2 cores)"
  local mod="$SRC/minio-$MINIO_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    wrapper_module minio github.com/minio/minio "$MINIO_VERSION" github.com/minio/minio
    # The pseudo-version's commit and time, as MinIO's own build stamps them.
    local stamp="${MINIO_VERSION#v0.0.0-}" commit="${MINIO_VERSION##*-}"
    stamp="${stamp%%-*}"
    local when="${stamp:0:4}-${stamp:4:2}-${stamp:6:2}T${stamp:8:2}:${stamp:10:2}:${stamp:12:2}Z"
    local m=github.com/minio/minio/cmd
    local ldflags="-s -w -X $m.Version=$when -X $m.CommitID=$commit -X $m.ShortCommitID=$commit"
    ldflags+=" -X $m.ReleaseTag=DEVELOPMENT.${when//:/-} -X $m.CopyrightYear=${stamp:0:4}"
    mkdir -p "$out.tmp"
    with_progress "minio $MINIO_VERSION" go build -trimpath -ldflags "$ldflags" -o "$out.tmp/minio" github.com/minio/minio
  )
  rm -rf "$out" && mv "$out.tmp" "$out"
}

total_start=$SECONDS
built_any=0
if [[ $# -eq 0 ]]; then set -- etcd kwok kubernetes; fi
# `node`: everything a real node runs.
components=()
for component in "$@"; do
  if [[ $component == node ]]; then components+=(kubernetes-node containerd runc cni-plugins); else components+=("$component"); fi
done
set -- "${components[@]}"
for component in "$@"; do
  case "$component" in
    etcd) [[ -x "$BIN/etcd-$ETCD_VERSION/etcd" ]] || { built_any=1; build_etcd; } ;;
    kwok) [[ -x "$BIN/kwok-$KWOK_VERSION/kwok" ]] || { built_any=1; build_kwok; } ;;
    kubernetes) [[ -x "$BIN/kubernetes-$K8S_VERSION/kube-apiserver" ]] || { built_any=1; build_kubernetes; } ;;
    helm) [[ -x "$BIN/helm-$HELM_VERSION/helm" ]] || { built_any=1; build_helm; } ;;
    minio) [[ -x "$BIN/minio-$MINIO_VERSION/minio" ]] || { built_any=1; build_minio; } ;;
    kubernetes-node) [[ -x "$BIN/kubernetes-node-$K8S_VERSION/pause" ]] || { built_any=1; build_kubernetes_node; } ;;
    containerd) [[ -x "$BIN/containerd-$CONTAINERD_VERSION/ctr" ]] || { built_any=1; build_containerd; } ;;
    runc) [[ -x "$BIN/runc-$RUNC_VERSION/runc" ]] || { built_any=1; build_runc; } ;;
    cni-plugins) [[ -x "$BIN/cni-plugins-$CNI_PLUGINS_VERSION/portmap" ]] || { built_any=1; build_cni_plugins; } ;;
    *) echo "unknown component: $component (allowed: etcd kwok kubernetes helm minio kubernetes-node containerd runc cni-plugins node)" >&2; exit 2 ;;
  esac
done
if [[ $built_any -eq 1 ]]; then
  log "all components built in $((SECONDS - total_start))s; cached under $BIN"
fi
