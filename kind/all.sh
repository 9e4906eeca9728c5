#!/usr/bin/env bash
# Every seed step in order: clusters, image, SPIRE, federation, controller, SLIM nodes, Alice,
# Bob, checks.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STEPS=(up.sh image.sh spire.sh federation.sh controller.sh slim.sh receiver.sh sender.sh verify.sh)

usage() {
  cat <<EOF2
Usage: kind/all.sh [--dry-run] [--help]

Runs the seed deployment from nothing to verified, one script per step:
  ${STEPS[*]}
Stops at the first step that fails; rerun that step's script after fixing it, then the rest.
kind/down.sh removes everything.

  --dry-run, -n   print every command instead of running it (reads nothing from any cluster)
  --help, -h      this text

Every step's environment variables apply (see each script's --help).
EOF2
}

parse_args "$@"

# The steps share the state directory parse_args chose (for a dry run, a fresh one).
for step in "${STEPS[@]}"; do
  note "step $step"
  "$BASH" "$KIND_DIR/$step"
done
note "all steps done"
