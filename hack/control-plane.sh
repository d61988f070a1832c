#!/usr/bin/env bash
# Builds a real Kubernetes control plane (kube-apiserver, kube-controller-manager, kube-scheduler, etcd),
# the node binaries (kubelet, kube-proxy), kubectl and KWOK from the Go module proxy, at the Kubernetes version the project's go.mod pins, and caches the
# binaries outside the clone, keyed by version. Prints the directory holding the binaries on stdout (for
# KUBEBUILDER_ASSETS); progress goes to stderr.
#
#   hack/control-plane.sh            build if missing, print the directory
#   hack/control-plane.sh --check    exit 0 if the cache is complete, 1 otherwise
#
# Environment: MCP_WARDEN_CACHE (default ~/.cache/mcp-warden), KWOK_VERSION (default from the Makefile).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
api_version=$(awk '{for (i=1;i<NF;i++) if ($i=="k8s.io/api") {print $(i+1); exit}}' "$root/go.mod")
if [[ -z "$api_version" ]]; then
  echo "control-plane: k8s.io/api not found in go.mod" >&2
  exit 1
fi
k8s_version="v1${api_version#v0}"          # k8s.io/api v0.37.2 -> Kubernetes v1.37.2
kwok_version=${KWOK_VERSION:-v0.8.0}
cache=${MCP_WARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden}
dir="$cache/k8s-$k8s_version-kwok-$kwok_version"
k8s_bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
bins=("${k8s_bins[@]}" etcd kwok)
files=(kwok-stages.yaml)

complete() {
  for b in "${bins[@]}"; do [[ -x "$dir/$b" ]] || return 1; done
  for f in "${files[@]}"; do [[ -s "$dir/$f" ]] || return 1; done
}

if [[ "${1:-}" == "--check" ]]; then
  complete && exit 0 || exit 1
fi
if complete; then
  echo "$dir"
  exit 0
fi

log() { echo "control-plane: $*" >&2; }
# progress prints a line every 100 packages that `go build -v` reports, so a cold build shows it is alive.
progress() { tee -a "$work/build.log" | awk -v what="$1" '{n++; if (n%100==0) {printf "control-plane:   %s: %d packages compiled\n", what, n > "/dev/stderr"; fflush("/dev/stderr")}} END {printf "control-plane:   %s: done (%d packages)\n", what, n > "/dev/stderr"}'; }

mkdir -p "$dir"
work=$(mktemp -d "$cache/build.XXXXXX")
trap 'status=$?; if [[ $status -ne 0 ]]; then log "build failed; last output:"; tail -n 40 "$work/build.log" >&2 || true; fi; rm -rf "$work"' EXIT
start=$SECONDS

need_k8s=false
for b in "${k8s_bins[@]}" etcd; do [[ -x "$dir/$b" ]] || need_k8s=true; done
if $need_k8s; then
  log "building Kubernetes $k8s_version (${k8s_bins[*]}, etcd) from the Go module proxy; about 12 minutes on 2 cores, cached in $dir"
  mkdir -p "$work/k8s" && cd "$work/k8s"
  go mod init mcp-warden.local/controlplane >/dev/null 2>&1
  go mod download -json "k8s.io/kubernetes@$k8s_version" >"$work/k8s.json"
  kmod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' "$work/k8s.json")
  # k8s.io/kubernetes replaces every staging module with a local path; point each at its published version.
  replaces=$(awk '/=> \.\/staging\/src\//{print $1}' "$kmod")
  for m in $replaces; do
    go mod edit -replace "$m=$m@$api_version"
  done
  etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$kmod")
  cat >tools.go <<GO
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/server/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
  log "resolving modules (k8s.io/kubernetes $k8s_version, etcd $etcd_version)"
  go get "k8s.io/kubernetes@$k8s_version" "go.etcd.io/etcd/server/v3@$etcd_version" >/dev/null 2>&1 || go get "k8s.io/kubernetes@$k8s_version" "go.etcd.io/etcd/server/v3@$etcd_version"
  go mod tidy >/dev/null 2>&1 || true
  ldflags="-s -w"
  minor=$(echo "$k8s_version" | cut -d. -f2)
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$k8s_version -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  log "compiling etcd"
  go build -v -trimpath -ldflags "-s -w" -o "$work/etcd" go.etcd.io/etcd/server/v3 2>&1 | progress etcd
  log "compiling ${k8s_bins[*]}"
  go build -v -trimpath -ldflags "$ldflags" -o "$work/" $(printf 'k8s.io/kubernetes/cmd/%s ' "${k8s_bins[@]}") 2>&1 | progress kubernetes
  for b in "${k8s_bins[@]}" etcd; do
    mv "$work/$b" "$dir/$b"
  done
fi

if [[ ! -x "$dir/kwok" || ! -s "$dir/kwok-stages.yaml" ]]; then
  log "building KWOK $kwok_version (simulated nodes)"
  mkdir -p "$work/kwok" && cd "$work/kwok"
  go mod init mcp-warden.local/kwok >/dev/null 2>&1
  go get "sigs.k8s.io/kwok/cmd/kwok@$kwok_version" >/dev/null 2>&1 || go get "sigs.k8s.io/kwok/cmd/kwok@$kwok_version"
  go build -v -trimpath -ldflags "-s -w" -o "$work/kwok-bin" sigs.k8s.io/kwok/cmd/kwok 2>&1 | progress kwok
  # KWOK's own stage definitions: nodes become Ready and keep a heartbeat; pods become Running and Ready.
  kdir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "$kdir/kustomize/stage/$f"
  done >"$work/kwok-stages.yaml"
  mv "$work/kwok-stages.yaml" "$dir/kwok-stages.yaml"
  mv "$work/kwok-bin" "$dir/kwok"
fi

log "control plane ready in $((SECONDS - start))s: $dir"
echo "$dir"
