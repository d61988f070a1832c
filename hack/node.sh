#!/usr/bin/env bash
# Prepares what a real node needs on this machine, beside the Kubernetes binaries hack/control-plane.sh
# builds (kubelet, kube-proxy): the Debian packages of the container runtime and the network tools (only
# those missing are installed, and the script names them), and kube-router, built from the Go module
# proxy at a pinned version and cached outside the clone, keyed by version. It enforces NetworkPolicies
# (its firewall only). Prints the directory holding kube-router on stdout; progress goes to stderr.
#
#   hack/node.sh            install and build what is missing, print the directory
#   hack/node.sh --check    exit 0 if everything is there, 1 otherwise (installs nothing)
#
# Environment: MCP_WARDEN_CACHE (default ~/.cache/mcp-warden), KUBE_ROUTER_VERSION (default from the
# Makefile). Linux only; installing packages needs root and apt-get.
set -euo pipefail

kube_router_version=${KUBE_ROUTER_VERSION:-v2.1.0}
cache=${MCP_WARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden}
dir="$cache/kube-router-$kube_router_version"
# Debian package -> a file it installs, to tell whether it is there.
packages=(containerd runc containernetworking-plugins iptables ipset conntrack socat iproute2)
declare -A probe=(
  [containerd]=/usr/bin/containerd
  [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge
  [iptables]=/usr/sbin/iptables
  [ipset]=/usr/sbin/ipset
  [conntrack]=/usr/sbin/conntrack
  [socat]=/usr/bin/socat
  [iproute2]=/usr/sbin/ip
)

log() { echo "node: $*" >&2; }

missing_packages() {
  local m=()
  for p in "${packages[@]}"; do
    [[ -e "${probe[$p]}" ]] || m+=("$p")
  done
  echo "${m[*]}"
}

complete() {
  [[ -z "$(missing_packages)" && -x "$dir/kube-router" ]]
}

if [[ "${1:-}" == "--check" ]]; then
  complete && exit 0 || exit 1
fi
# A machine that cannot run a real node at all (not Linux, not root) gets nothing and an empty output:
# the real-node tests then skip, saying why.
if [[ "$(uname -s)" != Linux ]]; then
  log "a real node needs Linux (this is $(uname -s)): nothing to install; the real-node tests will skip"
  exit 0
fi
if complete; then
  echo "$dir"
  exit 0
fi
start=$SECONDS

missing=$(missing_packages)
if [[ -n "$missing" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    log "missing Debian packages: $missing; a real node needs root (the real-node tests will skip); as root: apt-get install -y $missing"
    exit 0
  fi
  if ! command -v apt-get >/dev/null; then
    log "missing packages: $missing, and there is no apt-get; install them with this system's package manager"
    exit 1
  fi
  log "installing Debian packages: $missing"
  apt-get update -qq >&2 || log "apt-get update failed; trying the install with the package lists there are"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
  # The packages may start or enable daemons; the harness runs its own containerd, with its own config.
  still=$(missing_packages)
  if [[ -n "$still" ]]; then
    log "still missing after apt-get install: $still"
    exit 1
  fi
  log "installed $missing in $((SECONDS - start))s"
fi

if [[ ! -x "$dir/kube-router" ]]; then
  log "building kube-router $kube_router_version (NetworkPolicy firewall) from the Go module proxy; about 4 CPU-minutes, cached in $dir"
  mkdir -p "$cache"
  work=$(mktemp -d "$cache/build-kube-router.XXXXXX")
  trap 'status=$?; if [[ $status -ne 0 ]]; then log "build failed; last output:"; tail -n 40 "$work/build.log" >&2 || true; fi; rm -rf "$work"' EXIT
  cd "$work"
  go mod init mcp-warden.local/kuberouter >/dev/null 2>&1
  cat >tools.go <<GO
//go:build tools

package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
GO
  log "resolving modules (github.com/cloudnativelabs/kube-router/v2 $kube_router_version)"
  go get "github.com/cloudnativelabs/kube-router/v2@$kube_router_version" >"$work/build.log" 2>&1
  go mod tidy >>"$work/build.log" 2>&1 || true
  log "compiling kube-router"
  CGO_ENABLED=0 go build -v -trimpath -ldflags "-s -w" -o "$work/kube-router" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router 2>&1 |
    tee -a "$work/build.log" |
    awk '{n++; if (n%100==0) {printf "node:   kube-router: %d packages compiled\n", n > "/dev/stderr"; fflush("/dev/stderr")}} END {printf "node:   kube-router: done (%d packages)\n", n > "/dev/stderr"}'
  mkdir -p "$dir"
  mv "$work/kube-router" "$dir/kube-router"
fi

log "node prerequisites ready in $((SECONDS - start))s: $dir"
echo "$dir"
