#!/usr/bin/env bash
# Builds the SLIM-TS image and loads it into the three Kind clusters (they cannot pull it).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/image.sh [--dry-run] [--help]

Builds the image from the repository's Dockerfile (slim-node, slim-controller, slim-receiver,
slim-sender, slimctl and slim-dev-issuer on PATH) and loads it into admin.example,
cluster-a.example and cluster-b.example with `kind load docker-image`, so the charts and the
sample pods (imagePullPolicy IfNotPresent) find it without a registry.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  SLIM_IMAGE   image name (default: ghcr.io/slim-ts/slim-ts:0.1.0)
  DRY_RUN=1    same as --dry-run
EOF2
}

parse_args "$@"
need_tools docker kind

run docker build --tag "$SLIM_IMAGE" --file Dockerfile .
for cluster in "${ALL_CLUSTERS[@]}"; do
  run kind load docker-image "$SLIM_IMAGE" --name "$cluster"
done
