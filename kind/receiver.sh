#!/usr/bin/env bash
# Seed step 7a: Alice (slim-receiver) on cluster-a.example.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/receiver.sh [--dry-run] [--help]

Seed step 7, receiver. Applies kind/apps/alice.yaml on cluster-a.example: ServiceAccount alice,
its ClusterSPIFFEID (spiffe://cluster-a.example/ns/default/sa/alice, federated with
cluster-b.example) and Pod alice, whose container "client" runs
slim-receiver --local org/ns/alice against slim.slim.svc.cluster.local:46357. Waits until the
pod is Ready and shows its log.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  SLIM_IMAGE   image (default: ghcr.io/slim-ts/slim-ts:0.1.0)
  DRY_RUN=1    same as --dry-run
EOF2
}

parse_args "$@"
need_tools kubectl

cluster=${WORKLOAD_CLUSTERS[0]}
run kubectl --context "$(ctx "$cluster")" apply -f "$(app_manifest alice)"
run kubectl --context "$(ctx "$cluster")" wait --for=condition=Ready pod/alice --timeout="$ROLLOUT_TIMEOUT"
run kubectl --context "$(ctx "$cluster")" logs alice -c client
