#!/usr/bin/env bash
# Seed step 6 and the end of step 7: every node registered with the controller, bob got every reply.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/verify.sh [--dry-run] [--help]

Checks the deployment end to end:
  1. the controller's log (deployment/slim-control on admin.example) shows
     "Registering node with ID <id>" for EXPECTED_NODES distinct nodes (3 per workload cluster);
  2. bob's log on cluster-b.example ends with "10/10 replies received".
Also prints what the controller knows (slimctl nodes, run inside the controller pod).
Exits non-zero if a check fails, with what to look at next.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  EXPECTED_NODES   distinct node IDs the controller must have registered (default: 6)
  DRY_RUN=1        same as --dry-run
EOF2
}

parse_args "$@"
need_tools kubectl
EXPECTED_NODES=${EXPECTED_NODES:-6}
admin=$(ctx "$ADMIN_CLUSTER")
failed=0
controller_log=""
bob_log=""

capture controller_log "<log:$admin/deployment/slim-control>" \
  kubectl --context "$admin" -n "$SLIM_NAMESPACE" logs deployment/slim-control --tail=-1
capture bob_log "<log:$(ctx "${WORKLOAD_CLUSTERS[1]}")/bob>" \
  kubectl --context "$(ctx "${WORKLOAD_CLUSTERS[1]}")" logs bob -c client
# Informational: the admin API listens inside the controller pod, which holds an admin.example SVID.
run kubectl --context "$admin" -n "$SLIM_NAMESPACE" exec deployment/slim-control -- \
  slimctl nodes --server 127.0.0.1:50051 --spiffe-socket unix:///run/spire/agent-sockets/api.sock -o table ||
  warn "slimctl nodes failed (above); the checks below do not depend on it"

if is_dry_run; then
  note "would check: $EXPECTED_NODES distinct 'Registering node with ID' in the controller log, '10/10 replies received' in bob's log"
  exit 0
fi

# A node registers again after every reconnect: count nodes, not lines. Node IDs repeat across
# clusters (each StatefulSet has slim-0..2), so a node is its group (trust domain) plus its ID.
mapfile -t nodes < <(grep 'Registering node with ID' <<<"$controller_log" | while IFS= read -r line; do
  id=$(sed -n 's/.*"node_id":"\([^"]*\)".*/\1/p' <<<"$line")
  group=$(sed -n 's/.*"group":"\([^"]*\)".*/\1/p' <<<"$line")
  printf '%s/%s\n' "$group" "$id"
done | sort -u)
if ((${#nodes[@]} >= EXPECTED_NODES)); then
  log "controller registered ${#nodes[@]} nodes: ${nodes[*]}"
else
  failed=1
  printf 'FAIL: the controller registered %s of %s nodes: %s\n' "${#nodes[@]}" "$EXPECTED_NODES" "${nodes[*]:-none}" >&2
  grep 'rejected a node registration' <<<"$controller_log" | tail -n 6 >&2 || true
  printf '  next: kubectl --context kind-cluster-a.example -n slim logs slim-0 slim | grep -i controller\n' >&2
  printf '        see "Troubleshooting" in kind/README.md\n' >&2
fi

if grep -q '10/10 replies received' <<<"$bob_log"; then
  log "bob got 10/10 replies"
else
  failed=1
  printf 'FAIL: bob did not report "10/10 replies received"; his log ends with:\n' >&2
  tail -n 5 <<<"$bob_log" >&2
  printf '  next: kubectl --context %s -n slim exec deployment/slim-control -- slimctl routes --server 127.0.0.1:50051 --spiffe-socket unix:///run/spire/agent-sockets/api.sock\n' "$admin" >&2
fi

((failed == 0)) || die "verification failed (see kind/README.md, Troubleshooting)"
log "all checks passed"
