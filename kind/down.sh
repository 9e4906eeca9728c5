#!/usr/bin/env bash
# Seed step 9: deletes the three clusters and stops the cloud-provider-kind that kind/up.sh started.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/down.sh [--dry-run] [--help]

Seed step 9. Deletes the Kind clusters admin.example, cluster-a.example and cluster-b.example,
then stops the cloud-provider-kind process kind/up.sh started (by its recorded pid, under sudo
unless you are root) and forgets the recorded LoadBalancer names. Remove the lines you added to
/etc/hosts yourself.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  LB_SUDO          prefix for stopping cloud-provider-kind (default: sudo unless root)
  SLIM_KIND_STATE  state directory
  DRY_RUN=1        same as --dry-run
EOF2
}

parse_args "$@"
need_tools kind

for cluster in "${ALL_CLUSTERS[@]}"; do
  run kind delete cluster --name "$cluster"
done

# After the clusters: cloud-provider-kind removes a cluster's load balancer containers when it
# sees the cluster go.
pidfile="$STATE_DIR/cloud-provider-kind.pid"
sudo_prefix=$(lb_sudo)
stop=(kill)
[[ -z $sudo_prefix ]] || stop=("$sudo_prefix" kill)
if is_dry_run; then
  run "${stop[@]}" "<pid:$pidfile>"
elif [[ -s $pidfile ]] && ps -p "$(<"$pidfile")" >/dev/null 2>&1; then
  sleep 5
  run "${stop[@]}" "$(<"$pidfile")"
  rm -f "$pidfile"
else
  log "no cloud-provider-kind started by kind/up.sh is running"
fi

if ! is_dry_run; then
  rm -f "$(hosts_file)"
  rm -rf "$STATE_DIR/coredns" "$STATE_DIR/federation" "$STATE_DIR/apps"
fi
note "remove the spire.*, slim-control.* and slim.* lines you added to /etc/hosts"
