#!/usr/bin/env bash
# Seed step 7b: Bob (slim-sender) on cluster-b.example, 10 messages to Alice across the clusters.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/sender.sh [--dry-run] [--help]

Seed step 7, sender. Replaces Pod bob on cluster-b.example with kind/apps/bob.yaml
(ServiceAccount bob, its ClusterSPIFFEID federated with cluster-a.example, Pod bob with
container "client": slim-sender --local org/ns/bob --remote org/ns/alice --iterations 10 against
slim.slim.svc.cluster.local:46357, restartPolicy Never), waits for it to finish and shows its
log. Exits non-zero unless bob got all 10 replies.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  SLIM_IMAGE      image (default: ghcr.io/slim-ts/slim-ts:0.1.0)
  SENDER_TIMEOUT  seconds to wait for bob to finish (default: 300)
  DRY_RUN=1       same as --dry-run
EOF2
}

parse_args "$@"
need_tools kubectl
SENDER_TIMEOUT=${SENDER_TIMEOUT:-300}

cluster=${WORKLOAD_CLUSTERS[1]}
k=(kubectl --context "$(ctx "$cluster")")
# A finished pod cannot be started again: a rerun replaces it.
run "${k[@]}" delete pod bob --ignore-not-found --wait=true
run "${k[@]}" apply -f "$(app_manifest bob)"

phase_cmd=("${k[@]}" get pod bob -o 'jsonpath={.status.phase}')
print_cmd "${phase_cmd[@]}"
if ! is_dry_run; then
  log "waiting up to ${SENDER_TIMEOUT}s for bob to finish"
  deadline=$((SECONDS + SENDER_TIMEOUT))
  phase=""
  while :; do
    phase=$("${phase_cmd[@]}" 2>/dev/null || true)
    [[ $phase == Succeeded || $phase == Failed ]] && break
    ((SECONDS < deadline)) || break
    sleep 3
  done
fi

run "${k[@]}" logs bob -c client
if ! is_dry_run; then
  case $phase in
    Succeeded) log "bob got every reply" ;;
    Failed) die "bob did not get every reply (log above); see kind/README.md, Troubleshooting" ;;
    *) die "bob did not finish within ${SENDER_TIMEOUT}s (phase: ${phase:-unknown}); kubectl --context $(ctx "$cluster") describe pod bob" ;;
  esac
fi
