#!/usr/bin/env bash
# Prepares a real third-party MCP server for the real-node tests: the reference server
# @modelcontextprotocol/server-everything and the Node.js build it runs on (the npm package
# node-<os>-<arch>), both from the npm registry at pinned versions, laid out as the root filesystem of
# an image in a version-keyed cache outside the clone, once. The tests pack that tree into an image with
# the project's daemonless builder. Prints the tree's path on stdout (for MCP_WARDEN_EVERYTHING);
# progress goes to stderr.
#
#   hack/everything.sh            install if missing, print the tree's path
#   hack/everything.sh --check    exit 0 if the cache is complete, 1 otherwise
#
# The tree:
#   usr/local/bin/node                          Node.js, as the npm package ships it
#   app/node_modules/...                        the server and its dependencies (npm install)
#   lib/..., lib64/...                          the shared libraries node links (glibc, libstdc++),
#                                               copied from this machine: the npm build is not static
#
# Environment: MCP_WARDEN_CACHE (default ~/.cache/mcp-warden), EVERYTHING_VERSION and
# EVERYTHING_NODE_VERSION (defaults from the Makefile). Linux only (the image runs on the real node).
set -euo pipefail

version=${EVERYTHING_VERSION:-2026.8.31}
node_version=${EVERYTHING_NODE_VERSION:-22.23.5}
pkg=@modelcontextprotocol/server-everything
cache=${MCP_WARDEN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mcp-warden}
dir="$cache/server-everything-$version-node-$node_version"
tree="$dir/rootfs"
stamp="$pkg@$version node@$node_version"

log() { echo "everything: $*" >&2; }

complete() {
  [[ -x "$tree/usr/local/bin/node" && -s "$tree/app/node_modules/$pkg/dist/index.js" && "$(cat "$dir/.installed" 2>/dev/null)" == "$stamp" ]]
}

if [[ "${1:-}" == "--check" ]]; then
  complete && exit 0 || exit 1
fi
if complete; then
  echo "$tree"
  exit 0
fi
if [[ "$(uname -s)" != Linux ]]; then
  log "the image runs on the real node, which needs Linux (this is $(uname -s)): nothing to install"
  exit 0
fi
case "$(uname -m)" in x86_64 | amd64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) log "unsupported CPU $(uname -m)"; exit 1 ;; esac
command -v npm >/dev/null || { log "npm not found; install Node.js and npm (apt-get install -y npm)"; exit 1; }
command -v ldd >/dev/null || { log "ldd not found (Debian package libc-bin)"; exit 1; }

start=$SECONDS
mkdir -p "$cache"
work=$(mktemp -d "$cache/everything-build.XXXXXX")
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
npm_install() { npm install --prefix "$1" --save-exact --no-audit --no-fund --no-update-notifier --loglevel=error "$2" >&2; }

log "installing $pkg@$version and node-linux-$arch@$node_version from the npm registry into $dir"
mkdir -p "$work/rootfs/app" "$work/node" "$work/rootfs/usr/local/bin"
npm_install "$work/rootfs/app" "$pkg@$version"
npm_install "$work/node" "node-linux-$arch@$node_version"
cp "$work/node/node_modules/node-linux-$arch/bin/node" "$work/rootfs/usr/local/bin/node"
got=$(grep -o '"version": *"[^"]*"' "$work/rootfs/app/node_modules/$pkg/package.json" | head -1 | sed 's/.*"\([^"]*\)"$/\1/')
[[ "$got" == "$version" ]] || { log "npm installed $pkg $got, not $version"; exit 1; }

# The shared libraries node links, and its program interpreter, each at the path the loader looks at.
node_bin="$work/rootfs/usr/local/bin/node"
libs=$(ldd "$node_bin" | awk '/=>/ && $3 ~ /^\// {print $3} !/=>/ && $1 ~ /^\// {print $1}')
[[ -n "$libs" ]] || { log "ldd found no libraries for node"; exit 1; }
for l in $libs; do
  mkdir -p "$work/rootfs$(dirname "$l")"
  cp -L "$l" "$work/rootfs$l"
done
log "copied the libraries node links from this machine: $(echo $libs | tr '\n' ' ')"
got=$("$node_bin" --version)
[[ "$got" == "v$node_version" ]] || { log "node reports $got, not v$node_version"; exit 1; }

rm -rf "$work/node"
echo "$stamp" >"$work/.installed"
rm -rf "$dir"
mv "$work" "$dir"
trap - EXIT
log "$pkg@$version on Node.js $node_version ready in $((SECONDS - start))s ($(du -sh "$tree" | cut -f1)): $tree"
echo "$tree"
