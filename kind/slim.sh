#!/usr/bin/env bash
# Seed step 5: three SLIM nodes in each workload cluster behind the slim LoadBalancer.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/slim.sh [--dry-run] [--help]

Seed step 5. Installs charts/slim as release slim in namespace slim of cluster-a.example (with
kind/values/cluster-a.yaml) and cluster-b.example (kind/values/cluster-b.yaml), waits for both
LoadBalancer IPs, prints the /etc/hosts lines for slim.cluster-a.example and
slim.cluster-b.example, adds the names to every cluster's CoreDNS (each cluster's nodes dial the
other's external endpoint) and waits for the StatefulSets.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  SLIM_IMAGE   image (default: ghcr.io/slim-ts/slim-ts:0.1.0; load it with kind/image.sh)
  LB_TIMEOUT   seconds to wait for each LoadBalancer IP (default: 300)
  DRY_RUN=1    same as --dry-run
EOF2
}

parse_args "$@"
need_tools helm kubectl

for cluster in "${WORKLOAD_CLUSTERS[@]}"; do
  run helm upgrade --install slim charts/slim \
    --kube-context "$(ctx "$cluster")" --namespace "$SLIM_NAMESPACE" --create-namespace \
    --values "kind/values/${cluster%.example}.yaml" \
    --set-string "slim.image.repository=$(image_repository)" --set-string "slim.image.tag=$(image_tag)" \
    --set-string slim.image.pullPolicy=IfNotPresent
done

# Both names before any rollout wait: each cluster's nodes need the other's.
for cluster in "${WORKLOAD_CLUSTERS[@]}"; do
  wait_for_lb "$cluster" "$SLIM_NAMESPACE" slim "slim.$cluster"
done
sync_cluster_dns

for cluster in "${WORKLOAD_CLUSTERS[@]}"; do
  run kubectl --context "$(ctx "$cluster")" -n "$SLIM_NAMESPACE" rollout status statefulset/slim --timeout="$ROLLOUT_TIMEOUT"
done
