#!/usr/bin/env bash
# Seed step 3: a full federation mesh. Every cluster gets a ClusterFederatedTrustDomain for each
# of the other two, seeded with that trust domain's current bundle.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF2'
Usage: kind/federation.sh [--dry-run] [--help]

Seed step 3. Reads each SPIRE server's bundle (spire-server bundle show -format spiffe), renders
kind/federation/<trust domain>.yaml with it and applies it in the other two clusters, so that
each cluster federates with the other two (https_spiffe profile, endpoint SPIFFE ID
spiffe://<td>/spire/server, bundle endpoint https://spire.<td>:8443). Then waits until every
SPIRE server lists 2 federation relationships.

  --dry-run, -n   print every command instead of running it
  --help, -h      this text

Environment:
  FEDERATION_TIMEOUT   seconds to wait for the relationships (default: 120)
  DRY_RUN=1            same as --dry-run
EOF2
}

parse_args "$@"
need_tools kubectl
FEDERATION_TIMEOUT=${FEDERATION_TIMEOUT:-120}
MARKER='@TRUST_DOMAIN_BUNDLE@'

# One word per line, for mapfile: a function cannot hand back an array.
spire_server() {
  local cluster=$1
  shift
  printf '%s\n' kubectl --context "$(ctx "$cluster")" -n "$SPIRE_NAMESPACE" exec spire-server-0 -c spire-server -- /opt/spire/bin/spire-server "$@"
}

# The template's marker line becomes the bundle, indented like the marker (a YAML block scalar).
render_federation() {
  local td=$1 bundle=$2 template="kind/federation/$1.yaml"
  grep -q "^ *$MARKER\$" "$template" || die "$template has no '$MARKER' line for the bundle"
  BUNDLE=$bundle awk -v marker="$MARKER" '
    {
      line = $0
      sub(/^ +/, "", line)
      if (line == marker) {
        indent = substr($0, 1, length($0) - length(line))
        n = split(ENVIRON["BUNDLE"], rows, "\n")
        for (i = 1; i <= n; i++) print indent rows[i]
        next
      }
      print
    }' "$template"
}

mkdir -p "$STATE_DIR/federation"
for td in "${ALL_CLUSTERS[@]}"; do
  mapfile -t show < <(spire_server "$td" bundle show -format spiffe)
  capture bundle "<bundle:$td>" "${show[@]}"
  if ! is_dry_run && [[ $bundle != "{"* ]]; then
    die "spire-server bundle show in $(ctx "$td") did not print a SPIFFE bundle: $bundle"
  fi
  render_federation "$td" "$bundle" >"$STATE_DIR/federation/$td.yaml"
  note "rendered $STATE_DIR/federation/$td.yaml (ClusterFederatedTrustDomain for $td)"
done

for cluster in "${ALL_CLUSTERS[@]}"; do
  for td in "${ALL_CLUSTERS[@]}"; do
    [[ $td == "$cluster" ]] && continue
    run kubectl --context "$(ctx "$cluster")" apply -f "$STATE_DIR/federation/$td.yaml"
  done
done

want=$((${#ALL_CLUSTERS[@]} - 1))
for cluster in "${ALL_CLUSTERS[@]}"; do
  mapfile -t list < <(spire_server "$cluster" federation list)
  if is_dry_run; then
    print_cmd "${list[@]}"
    continue
  fi
  log "waiting up to ${FEDERATION_TIMEOUT}s for $want federation relationships in $(ctx "$cluster")"
  deadline=$((SECONDS + FEDERATION_TIMEOUT))
  while :; do
    out=$("${list[@]}" 2>&1 || true)
    grep -q "Found $want federation relationship" <<<"$out" && break
    if ((SECONDS >= deadline)); then
      printf '%s\n' "$out" >&2
      die "$(ctx "$cluster") does not list $want federation relationships: check 'kubectl --context $(ctx "$cluster") get clusterfederatedtrustdomains' (className must be $SPIRE_CLASS_NAME) and the spire-controller-manager log (kubectl --context $(ctx "$cluster") -n $SPIRE_NAMESPACE logs spire-server-0 -c spire-controller-manager)"
    fi
    sleep 5
  done
  print_cmd "${list[@]}"
  printf '%s\n' "$out"
done
