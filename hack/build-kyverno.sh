#!/usr/bin/env bash
# Builds the Kyverno CLI from the Go module proxy at the pinned version (go install refuses: Kyverno's
# go.mod has replace directives), caches it outside the clone and links it into bin/.
#   hack/build-kyverno.sh VERSION BIN_DIR
set -euo pipefail
version=$1
bindir=$2
cache=${MCP_WARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden}/kyverno-$version
mkdir -p "$cache" "$bindir"
if [[ ! -x "$cache/kyverno" ]]; then
  echo "kyverno: building the Kyverno CLI $version from the Go module proxy (about 6 minutes on 2 cores), cached in $cache" >&2
  go mod download "github.com/kyverno/kyverno@$version"
  src=$(go env GOMODCACHE)/github.com/kyverno/kyverno@$version
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$src" && GOFLAGS=-mod=mod go build -v -trimpath -ldflags "-s -w" -o "$tmp/kyverno" ./cmd/cli/kubectl-kyverno 2>&1 |
    awk '{n++; if (n%200==0) {printf "kyverno:   %d packages compiled\n", n > "/dev/stderr"}} END {printf "kyverno:   done (%d packages)\n", n > "/dev/stderr"}')
  mv "$tmp/kyverno" "$cache/kyverno"
fi
ln -sf "$cache/kyverno" "$bindir/kyverno"
