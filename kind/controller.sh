#!/usr/bin/env bash
# Seed step 4: the SLIM controller on admin.example behind the slim-control LoadBalancer.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/controller.sh [--dry-run] [--help]

Seed step 4. Installs charts/slim-controller as release slim-control in namespace slim of
admin.example with kind/values/controller.yaml and the image SLIM_IMAGE, waits for the
LoadBalancer IP, prints the /etc/hosts line for slim-control.admin.example and adds the name to
every cluster's CoreDNS (the workload clusters' nodes register at
https://slim-control.admin.example:50052).

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  SLIM_IMAGE   image (default: ghcr.io/slim-ts/slim-ts:0.1.0; load it with kind/image.sh)
  LB_TIMEOUT   seconds to wait for the LoadBalancer IP (default: 300)
  DRY_RUN=1    same as --dry-run
EOF2
}

parse_args "$@"
need_tools helm kubectl

run helm upgrade --install slim-control charts/slim-controller \
  --kube-context "$(ctx "$ADMIN_CLUSTER")" --namespace "$SLIM_NAMESPACE" --create-namespace \
  --values kind/values/controller.yaml \
  --set-string "image.repository=$(image_repository)" --set-string "image.tag=$(image_tag)" \
  --set-string image.pullPolicy=IfNotPresent

wait_for_lb "$ADMIN_CLUSTER" "$SLIM_NAMESPACE" slim-control "slim-control.$ADMIN_CLUSTER"
sync_cluster_dns
run kubectl --context "$(ctx "$ADMIN_CLUSTER")" -n "$SLIM_NAMESPACE" rollout status deployment/slim-control --timeout="$ROLLOUT_TIMEOUT"
