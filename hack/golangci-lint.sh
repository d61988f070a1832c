#!/usr/bin/env bash
# Builds golangci-lint from the Go module proxy at the pinned version into a version-keyed cache outside
# the clone, once, and prints the path of the binary on stdout (for `make lint`); progress goes to stderr.
#
#   hack/golangci-lint.sh            build if missing, print the binary's path
#   hack/golangci-lint.sh --check    exit 0 if the cache is complete, 1 otherwise
#
# Environment: MCP_WARDEN_CACHE (default ~/.cache/mcp-warden), GOLANGCI_LINT_VERSION (default from the
# Makefile).
set -euo pipefail

version=${GOLANGCI_LINT_VERSION:-v2.15.0}
pkg=github.com/golangci/golangci-lint/v2/cmd/golangci-lint
cache=${MCP_WARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden}
dir="$cache/golangci-lint-$version"
bin="$dir/golangci-lint"

log() { echo "golangci-lint: $*" >&2; }

# complete: the build finished (its stamp is written last) and the binary is there.
complete() {
  [[ -x "$bin" && "$(cat "$dir/.installed" 2>/dev/null)" == "$pkg@$version" ]]
}

if [[ "${1:-}" == "--check" ]]; then
  complete && exit 0 || exit 1
fi
if complete; then
  echo "$bin"
  exit 0
fi

# progress prints a line every 50 packages that `go install -v` reports, so a cold build shows it is alive.
progress() { tee -a "$work/build.log" | awk '{n++; if (n%50==0) {printf "golangci-lint:   %d packages compiled\n", n > "/dev/stderr"; fflush("/dev/stderr")}} END {printf "golangci-lint:   done (%d packages)\n", n > "/dev/stderr"}'; }

start=$SECONDS
mkdir -p "$cache"
work=$(mktemp -d "$cache/golangci-lint-build.XXXXXX")
trap 'status=$?; if [[ $status -ne 0 ]]; then log "build failed; last output:"; tail -n 40 "$work/build.log" >&2 || true; fi; rm -rf "$work"' EXIT

log "building $pkg@$version from the Go module proxy (about 10 minutes on 2 cores), cached in $dir"
# go install with @version builds in module mode from golangci-lint's own go.mod (its pinned linters);
# the binary reads its version from the build info.
GOBIN="$work" go install -v -trimpath -ldflags "-s -w" "$pkg@$version" 2>&1 | progress

got=$("$work/golangci-lint" version 2>&1) || { log "the built binary does not run: $got"; exit 1; }
[[ "$got" == *"version ${version#v} "* ]] || { log "the built binary reports \"$got\", not version ${version#v}"; exit 1; }
echo "$pkg@$version" >"$work/.installed"

rm -rf "$dir"
mkdir -p "$dir"
mv "$work/golangci-lint" "$work/.installed" "$dir/"
log "$pkg@$version ready in $((SECONDS - start))s: $bin"
echo "$bin"
