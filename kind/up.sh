#!/usr/bin/env bash
# Seed step 1: the three Kind clusters, and cloud-provider-kind so LoadBalancer Services get IPs.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
Usage: kind/up.sh [--dry-run] [--help]

Seed step 1. Creates the Kind clusters admin.example, cluster-a.example and cluster-b.example
from kind/clusters/<name>.yaml (kubectl contexts kind-admin.example, kind-cluster-a.example,
kind-cluster-b.example; existing clusters are kept) and starts cloud-provider-kind in the
background, which gives LoadBalancer Services an IP on the Docker "kind" network.

cloud-provider-kind runs under sudo unless you are root (the seed's "sudo is only required to
start Kind's LoadBalancer provider"); sudo asks for your password first, in the foreground.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  LB_SUDO               prefix for cloud-provider-kind (default: sudo unless root; empty: none)
  CLOUD_PROVIDER_KIND   the LoadBalancer provider binary (default: cloud-provider-kind)
  SLIM_KIND_STATE       state directory: its pid file and log, the LoadBalancer names
  DRY_RUN=1             same as --dry-run
EOF
}

parse_args "$@"

CLOUD_PROVIDER_KIND=${CLOUD_PROVIDER_KIND:-cloud-provider-kind}
need_tools kind docker "$CLOUD_PROVIDER_KIND"
sudo_prefix=$(lb_sudo)
[[ -z $sudo_prefix ]] || need_tools "$sudo_prefix"

existing=""
capture existing "" kind get clusters
for cluster in "${ALL_CLUSTERS[@]}"; do
  if grep -qxF "$cluster" <<<"$existing"; then
    log "cluster $cluster exists (context $(ctx "$cluster")); keeping it"
    continue
  fi
  run kind create cluster --name "$cluster" --config "kind/clusters/$cluster.yaml" --wait 120s
done

pidfile="$STATE_DIR/cloud-provider-kind.pid"
logfile="$STATE_DIR/cloud-provider-kind.log"
running=""
if ! is_dry_run; then
  if [[ -s $pidfile ]] && ps -p "$(<"$pidfile")" >/dev/null 2>&1; then
    running="pid $(<"$pidfile"), started by kind/up.sh"
  elif command -v pgrep >/dev/null 2>&1 && pgrep -f '(^|/)cloud-provider-kind( |$)' >/dev/null 2>&1; then
    # Two providers would both create load balancers for every Service.
    running="started outside kind/up.sh; kind/down.sh will not stop it"
  fi
fi

if [[ -n $running ]]; then
  log "cloud-provider-kind is already running ($running)"
else
  lb_cmd=("$CLOUD_PROVIDER_KIND")
  if [[ -n $sudo_prefix ]]; then
    # Ask for the password now: the background process cannot.
    [[ $(basename "$sudo_prefix") != sudo ]] || run "$sudo_prefix" -v
    lb_cmd=("$sudo_prefix" "${lb_cmd[@]}")
  fi
  run_bg "$logfile" "$pidfile" "${lb_cmd[@]}"
  if ! is_dry_run; then
    sleep 3
    if ! ps -p "$(<"$pidfile")" >/dev/null 2>&1; then
      tail -n 20 "$logfile" >&2 || true
      die "cloud-provider-kind exited at once (log above: $logfile)"
    fi
    log "cloud-provider-kind running (pid $(<"$pidfile"), log $logfile)"
  fi
fi

contexts=()
for cluster in "${ALL_CLUSTERS[@]}"; do contexts+=("$(ctx "$cluster")"); done
note "clusters ready: kubectl contexts ${contexts[*]}"
