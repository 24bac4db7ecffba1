#!/usr/bin/env bash
# Deletes the kind cluster scripts/kind-up.sh made, and everything in it.
# Usage: scripts/kind-down.sh
set -euo pipefail

CLUSTER="${EMPORIUM_KIND_CLUSTER:-emporium}"

if ! command -v kind >/dev/null 2>&1; then
  echo "error: kind is not installed, so there is no kind cluster to delete" >&2
  exit 1
fi
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind delete cluster --name "$CLUSTER"
else
  echo "no kind cluster named $CLUSTER; nothing to do"
fi
