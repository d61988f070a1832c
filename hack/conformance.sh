#!/usr/bin/env bash
# Installs the MCP conformance suite (@modelcontextprotocol/conformance) from the npm registry at the
# pinned version into a version-keyed cache outside the clone, once, and prints the path of its CLI on
# stdout (for MCP_CONFORMANCE); progress goes to stderr.
#
#   hack/conformance.sh            install if missing, print the CLI's path
#   hack/conformance.sh --check    exit 0 if the cache is complete, 1 otherwise
#
# The CLI needs Node.js 22 or later (it imports fs.globSync). When the node on PATH is older, a pinned
# Node.js build is installed from the npm registry too (package node-<os>-<arch>), into the same cache.
# The printed CLI is a wrapper that runs the suite with the right node.
#
# Environment: MCP_WARDEN_CACHE (default ~/.cache/mcp-warden), CONFORMANCE_VERSION and
# CONFORMANCE_NODE_VERSION (defaults from the Makefile).
set -euo pipefail

version=${CONFORMANCE_VERSION:-0.1.16}
node_version=${CONFORMANCE_NODE_VERSION:-22.23.5}
pkg=@modelcontextprotocol/conformance
cache=${MCP_WARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden}
dir="$cache/conformance-$version"
cli="$dir/conformance"

log() { echo "conformance: $*" >&2; }

# complete: the install finished (its stamp is written last) and the wrapper and the CLI are there.
complete() {
  [[ -x "$cli" && -s "$dir/node_modules/$pkg/dist/index.js" && "$(cat "$dir/.installed" 2>/dev/null)" == "$pkg@$version" ]]
}

if [[ "${1:-}" == "--check" ]]; then
  complete && exit 0 || exit 1
fi
if complete; then
  echo "$cli"
  exit 0
fi

command -v npm >/dev/null || { log "npm not found; install Node.js and npm (the suite needs Node.js 22 or later)"; exit 1; }
start=$SECONDS
mkdir -p "$cache"
work=$(mktemp -d "$cache/conformance-build.XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
npm_install() { npm install --prefix "$1" --no-audit --no-fund --no-update-notifier --loglevel=error "$2" >&2; }

log "installing $pkg@$version from the npm registry into $dir"
npm_install "$work" "$pkg@$version"

node_major=0
if command -v node >/dev/null; then
  node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
fi
if (( node_major < 22 )); then
  case "$(uname -s)" in Linux) os=linux ;; Darwin) os=darwin ;; *) log "unsupported OS $(uname -s); install Node.js 22 or later"; exit 1 ;; esac
  case "$(uname -m)" in x86_64 | amd64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) log "unsupported CPU $(uname -m); install Node.js 22 or later"; exit 1 ;; esac
  log "node on PATH is v${node_major:-?}, the suite needs 22 or later: installing node-$os-$arch@$node_version from the npm registry"
  npm_install "$work/node" "node-$os-$arch@$node_version"
fi

cat >"$work/conformance" <<'SH'
#!/usr/bin/env bash
# Runs the MCP conformance CLI installed next to this script (written by hack/conformance.sh).
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
node=node
[[ -x "$here/node/node_modules/.bin/node" ]] && node="$here/node/node_modules/.bin/node"
exec "$node" "$here/node_modules/@modelcontextprotocol/conformance/dist/index.js" "$@"
SH
chmod +x "$work/conformance"

got=$("$work/conformance" --version 2>&1) || { log "the installed CLI does not run: $got"; exit 1; }
[[ "$got" == "$version" ]] || { log "the installed CLI reports version $got, not $version"; exit 1; }
echo "$pkg@$version" >"$work/.installed"

rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
log "$pkg@$version ready in $((SECONDS - start))s: $cli"
echo "$cli"
