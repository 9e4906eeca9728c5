#!/usr/bin/env bash
# Seed step 2: SPIRE (server, agents, CSI driver, controller manager) with federation enabled in
# each cluster, its bundle endpoint on a LoadBalancer as spire.<trust domain>:8443.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/spire.sh [--dry-run] [--help]

Seed step 2. Installs the SPIFFE hardened charts (spire-crds, then spire) into namespace "spire"
of every cluster with kind/spire/common.yaml and kind/spire/<trust domain>.yaml: trust domain =
cluster name, federation bundle endpoint on :8443 behind the spire-server LoadBalancer, agent
socket api.sock (workloads mount it with the csi.spiffe.io driver), controller-manager class
spire-server-spire. Then waits for the LoadBalancer IPs, prints the /etc/hosts lines for
spire.admin.example, spire.cluster-a.example and spire.cluster-b.example, and adds those names
to every cluster's CoreDNS so the SPIRE servers can reach each other's bundle endpoints.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  SPIRE_CHART_VERSION, SPIRE_CRDS_CHART_VERSION   pin the charts (default: newest)
  SPIRE_HELM_REPO   chart repository (default: https://spiffe.github.io/helm-charts-hardened/)
  LB_TIMEOUT        seconds to wait for each LoadBalancer IP (default: 300)
  DRY_RUN=1         same as --dry-run
EOF2
}

parse_args "$@"
need_tools helm kubectl

version_args() { [[ -z $1 ]] || printf '%s\n' --version "$1"; }
mapfile -t crds_version < <(version_args "$SPIRE_CRDS_CHART_VERSION")
mapfile -t spire_version < <(version_args "$SPIRE_CHART_VERSION")

for cluster in "${ALL_CLUSTERS[@]}"; do
  log "SPIRE for trust domain $cluster ($(ctx "$cluster"))"
  run helm upgrade --install spire-crds spire-crds --repo "$SPIRE_HELM_REPO" "${crds_version[@]}" \
    --kube-context "$(ctx "$cluster")" --namespace "$SPIRE_NAMESPACE" --create-namespace --wait
  # No --wait here: it would sit out its timeout on the LoadBalancer if cloud-provider-kind is
  # missing; wait_for_lb below says so instead.
  run helm upgrade --install spire spire --repo "$SPIRE_HELM_REPO" "${spire_version[@]}" \
    --kube-context "$(ctx "$cluster")" --namespace "$SPIRE_NAMESPACE" --create-namespace \
    --values kind/spire/common.yaml --values "kind/spire/$cluster.yaml"
done

for cluster in "${ALL_CLUSTERS[@]}"; do
  wait_for_lb "$cluster" "$SPIRE_NAMESPACE" spire-server "spire.$cluster"
done
sync_cluster_dns

for cluster in "${ALL_CLUSTERS[@]}"; do
  for workload in statefulset/spire-server daemonset/spire-agent daemonset/spire-spiffe-csi-driver; do
    run kubectl --context "$(ctx "$cluster")" -n "$SPIRE_NAMESPACE" rollout status "$workload" --timeout="$ROLLOUT_TIMEOUT"
  done
done
