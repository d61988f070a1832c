#!/usr/bin/env bash
# Fails when `make manifests generate` would change a file: generated code and manifests are never edited
# by hand and must be committed up to date.
set -euo pipefail
make=${1:-make}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
snap=$(mktemp -d)
trap 'rm -rf "$snap"' EXIT
paths=(api config/crd config/rbac config/webhook config/argocd charts/mcp-warden/crds charts/mcp-warden/files charts/mcp-warden/templates)
for p in "${paths[@]}"; do
  [[ -e "$p" ]] && mkdir -p "$snap/$(dirname "$p")" && cp -r "$p" "$snap/$p"
done
$make --no-print-directory manifests generate >/dev/null
status=0
for p in "${paths[@]}"; do
  if [[ -e "$p" || -e "$snap/$p" ]]; then
    if ! diff -r "$snap/$p" "$p" >/dev/null 2>&1; then
      diff -ru "$snap/$p" "$p" || true
      status=1
    fi
  fi
done
if [[ $status -ne 0 ]]; then
  echo "generated files were out of date (now regenerated above); commit the result of 'make manifests generate'" >&2
fi
exit $status
