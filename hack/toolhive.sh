#!/usr/bin/env bash
# Builds ToolHive's operator (github.com/stacklok/toolhive/cmd/thv-operator) from the Go module proxy at a
# pinned version, with the CRDs of that same module (deploy/charts/operator-crds/files/crds), into
# ~/.cache/mcp-warden/toolhive-<version>/, and prints that directory (bin/thv-operator, crds/). It is
# cached by version: a second run prints the directory at once. It is built in its own module directory;
# this repository's go.mod is untouched. The pinned v0.47.0 is the newest release whose module graph
# the Go module proxy serves in full: v0.55.1 to v0.63.0 need Go 1.27 (TOOLHIVE_GOTOOLCHAIN=go1.27.3)
# and also modules the proxy refuses (403: github.com/jwx-go/jwkfetch/v4 v4.0.4,
# github.com/stacklok/toolhive-core/redisconn, github.com/getsentry/sentry-go/otel/otlp v0.50.0,
# golang.org/x/exp/jsonrpc2). On failure it prints the reason on stderr and exits non-zero; `make bench`
# then skips ToolHive with that message.
set -euo pipefail
VERSION="${TOOLHIVE_VERSION:-v0.47.0}"
TOOLCHAIN="${TOOLHIVE_GOTOOLCHAIN:-local}"
GOLINE="${TOOLHIVE_GO:-1.26}"
DIR="${HOME}/.cache/mcp-warden/toolhive-${VERSION}"
if [[ -x "${DIR}/bin/thv-operator" && -f "${DIR}/crds/toolhive.stacklok.dev_mcpservers.yaml" ]]; then
  echo "${DIR}"
  exit 0
fi
mkdir -p "${DIR}/src" "${DIR}/bin"
cd "${DIR}/src"
cat > go.mod <<GOMOD
module mcp-warden.local/toolhive-build

go ${GOLINE}

require github.com/stacklok/toolhive ${VERSION}
GOMOD
export GOTOOLCHAIN="${TOOLCHAIN}" GOFLAGS=-mod=mod
go get "github.com/stacklok/toolhive/cmd/thv-operator@${VERSION}" >&2
go build -trimpath -o "${DIR}/bin/thv-operator.tmp" github.com/stacklok/toolhive/cmd/thv-operator >&2
MOD="$(go list -m -f '{{.Dir}}' github.com/stacklok/toolhive)"
rm -rf "${DIR}/crds.tmp" && mkdir -p "${DIR}/crds.tmp"
cp "${MOD}"/deploy/charts/operator-crds/files/crds/*.yaml "${DIR}/crds.tmp/"
rm -rf "${DIR}/crds" && mv "${DIR}/crds.tmp" "${DIR}/crds"
mv "${DIR}/bin/thv-operator.tmp" "${DIR}/bin/thv-operator"
echo "${DIR}"
