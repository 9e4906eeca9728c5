# shellcheck shell=bash
# Shared by every kind/*.sh step: argument handling, the dry-run wrapper, cluster names, waiting
# for LoadBalancer IPs and making the seed's LoadBalancer names resolvable inside the clusters.
# Sourced, never run.
# The settings below are read by the scripts that source this file, not here.
# shellcheck disable=SC2034

# mapfile, printf -v and friends; macOS's /bin/bash is 3.2.
if ((BASH_VERSINFO[0] < 4)); then
  printf 'error: bash 4 or newer is required (this is %s; on macOS: brew install bash)\n' "$BASH_VERSION" >&2
  exit 1
fi

# Commands print repo-relative paths, so they can be pasted from the repository root.
KIND_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$KIND_DIR/.." && pwd)
cd "$REPO_ROOT" || exit 1

# The seed's trust domains double as Kind cluster names; kubectl contexts are kind-<name>.
ADMIN_CLUSTER=admin.example
WORKLOAD_CLUSTERS=(cluster-a.example cluster-b.example)
ALL_CLUSTERS=("$ADMIN_CLUSTER" "${WORKLOAD_CLUSTERS[@]}")

DEFAULT_SLIM_IMAGE=ghcr.io/slim-ts/slim-ts:0.1.0
SLIM_IMAGE=${SLIM_IMAGE:-$DEFAULT_SLIM_IMAGE}

SLIM_NAMESPACE=slim
SPIRE_NAMESPACE=spire
SPIRE_HELM_REPO=${SPIRE_HELM_REPO:-https://spiffe.github.io/helm-charts-hardened/}
# Empty: the newest chart. Pin with e.g. SPIRE_CHART_VERSION=0.x.y for reproducible installs.
SPIRE_CHART_VERSION=${SPIRE_CHART_VERSION:-}
SPIRE_CRDS_CHART_VERSION=${SPIRE_CRDS_CHART_VERSION:-}
# Must equal spire-server.controllerManager.className in kind/spire/common.yaml, the className of
# kind/apps and kind/federation, and spire.className of both SLIM charts.
SPIRE_CLASS_NAME=spire-server-spire

LB_TIMEOUT=${LB_TIMEOUT:-300}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-300s}

case ${DRY_RUN:-0} in
  1 | true | yes) DRY_RUN=1 ;;
  *) DRY_RUN=0 ;;
esac

# The markers around the CoreDNS server block this file writes, so a rerun replaces it.
DNS_BEGIN='# slim-kind: BEGIN LoadBalancer names (kind/lib.sh)'
DNS_END='# slim-kind: END'

ctx() { printf 'kind-%s' "$1"; }

is_dry_run() { [[ $DRY_RUN == 1 ]]; }

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Quote like a shell would need, but leave plain words bare so the output stays readable.
shell_quote() {
  local out=() a q="'"
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+=("$a")
    else
      out+=("'${a//$q/$q\\$q$q}'")
    fi
  done
  printf '%s' "${out[*]}"
}

# Dry-run prints commands on stdout (the output is the plan); a real run traces them on stderr.
print_cmd() {
  if is_dry_run; then
    printf '+ %s\n' "$(shell_quote "$@")"
  else
    printf '+ %s\n' "$(shell_quote "$@")" >&2
  fi
}

note() {
  if is_dry_run; then printf '# %s\n' "$*"; else log "$*"; fi
}

run() {
  print_cmd "$@"
  is_dry_run && return 0
  "$@"
}

# capture VAR PLACEHOLDER CMD...: VAR gets CMD's stdout. A dry run must not read the clusters, so
# VAR gets PLACEHOLDER instead and the later commands show where the value would go.
capture() {
  local __var=$1 __placeholder=$2 __out
  shift 2
  print_cmd "$@"
  if is_dry_run; then
    printf -v "$__var" '%s' "$__placeholder"
    return 0
  fi
  __out=$("$@")
  printf -v "$__var" '%s' "$__out"
}

# Where generated manifests, the LoadBalancer names and the cloud-provider-kind pid live. A dry
# run gets a fresh directory unless told otherwise, so it never touches a real run's state.
init_state_dir() {
  if [[ -z ${SLIM_KIND_STATE:-} ]]; then
    if is_dry_run; then
      SLIM_KIND_STATE=$(mktemp -d "${TMPDIR:-/tmp}/slim-kind-dry-run.XXXXXX")
    else
      SLIM_KIND_STATE=${XDG_STATE_HOME:-$HOME/.local/state}/slim-kind
    fi
  fi
  export SLIM_KIND_STATE
  STATE_DIR=$SLIM_KIND_STATE
  mkdir -p "$STATE_DIR"
}

# Each script defines usage() before calling this.
parse_args() {
  while (($# > 0)); do
    case $1 in
      --dry-run | -n) DRY_RUN=1 ;;
      -h | --help)
        usage
        exit 0
        ;;
      *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
  done
  export DRY_RUN
  init_state_dir
}

install_hint() {
  case $1 in
    kind) printf 'https://kind.sigs.k8s.io/docs/user/quick-start/#installation' ;;
    kubectl) printf 'https://kubernetes.io/docs/tasks/tools/' ;;
    helm) printf 'https://helm.sh/docs/intro/install/' ;;
    docker) printf 'https://docs.docker.com/engine/install/ (and a running Docker engine)' ;;
    cloud-provider-kind) printf 'go install sigs.k8s.io/cloud-provider-kind@latest (it lands in the bin directory of go env GOPATH: put that on PATH)' ;;
    sudo) printf 'run as root, or set LB_SUDO= when your user may use Docker directly' ;;
    *) printf 'install it with your package manager' ;;
  esac
}

# A dry run runs none of these tools, so it needs none of them.
need_tools() {
  is_dry_run && return 0
  local t missing=0
  for t in "$@"; do
    if ! command -v "$t" >/dev/null 2>&1; then
      printf 'error: %s is required but not on PATH: %s\n' "$t" "$(install_hint "$t")" >&2
      missing=1
    fi
  done
  ((missing == 0)) || exit 1
}

# repository and tag of SLIM_IMAGE, for the charts' image.repository / image.tag values. A
# registry port ("localhost:5000/x") is not a tag.
image_repository() {
  local last=${SLIM_IMAGE##*/}
  if [[ $last == *:* ]]; then printf '%s' "${SLIM_IMAGE%:*}"; else printf '%s' "$SLIM_IMAGE"; fi
}
image_tag() {
  local last=${SLIM_IMAGE##*/}
  if [[ $last == *:* ]]; then printf '%s' "${last##*:}"; else printf 'latest'; fi
}

# Names the seed's /etc/hosts lines point at LoadBalancer IPs, one "IP NAME" per line.
hosts_file() { printf '%s/hosts' "$STATE_DIR"; }

record_host() {
  local name=$1 ip=$2 file tmp
  file=$(hosts_file)
  tmp="$file.tmp"
  touch "$file"
  awk -v n="$name" '$2 != n' "$file" >"$tmp"
  printf '%s %s\n' "$ip" "$name" >>"$tmp"
  mv "$tmp" "$file"
}

# wait_for_lb CLUSTER NAMESPACE SERVICE NAME: waits for the Service's LoadBalancer IP (from
# cloud-provider-kind), records NAME → IP and prints the seed's /etc/hosts line.
wait_for_lb() {
  local cluster=$1 ns=$2 svc=$3 name=$4 ip="" deadline
  local get=(kubectl --context "$(ctx "$cluster")" -n "$ns" get service "$svc" -o 'jsonpath={.status.loadBalancer.ingress[0].ip}')
  print_cmd "${get[@]}"
  if is_dry_run; then
    ip="<lb-ip:$name>"
  else
    log "waiting up to ${LB_TIMEOUT}s for a LoadBalancer IP on service/$svc ($ns, $(ctx "$cluster"))"
    deadline=$((SECONDS + LB_TIMEOUT))
    while :; do
      ip=$("${get[@]}" 2>/dev/null || true)
      [[ -n $ip ]] && break
      if ((SECONDS >= deadline)); then
        die "service/$svc in $ns ($(ctx "$cluster")) got no LoadBalancer IP in ${LB_TIMEOUT}s: is cloud-provider-kind running? (kind/up.sh starts it; log: $STATE_DIR/cloud-provider-kind.log)"
      fi
      sleep 5
    done
  fi
  record_host "$name" "$ip"
  printf 'Add to your /etc/hosts: %s    %s\n' "$ip" "$name"
}

# The Corefile with our server block (re)placed: the trust domains' zones answered from the
# recorded LoadBalancer IPs, everything else untouched.
render_corefile() {
  local corefile=$1 zones=() td ip name
  for td in "${ALL_CLUSTERS[@]}"; do zones+=("$td:53"); done
  printf '%s\n' "$corefile" | awk -v b="$DNS_BEGIN" -v e="$DNS_END" '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }'
  printf '%s\n' "$DNS_BEGIN"
  printf '%s {\n' "${zones[*]}"
  printf '    errors\n'
  printf '    hosts {\n'
  while read -r ip name; do
    if [[ -n ${name:-} ]]; then printf '        %s %s\n' "$ip" "$name"; fi
  done <"$(hosts_file)"
  # LoadBalancer IPs change when a step is redone; do not let resolvers hold them for an hour.
  printf '        ttl 30\n'
  printf '    }\n'
  printf '}\n'
  printf '%s\n' "$DNS_END"
}

coredns_configmap() {
  printf 'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: coredns\n  namespace: kube-system\ndata:\n  Corefile: |\n'
  render_corefile "$1" | sed 's/^/    /'
}

# Pods in every cluster must resolve spire.<td> (federation), slim-control.admin.example (node
# registration) and slim.<td> (cross-cluster links) exactly as the /etc/hosts lines do on the
# host. CoreDNS is restarted rather than left to its reload plugin, so the names work when the
# next step starts.
sync_cluster_dns() {
  local cluster corefile out
  [[ -s $(hosts_file) ]] || return 0
  mkdir -p "$STATE_DIR/coredns"
  for cluster in "${ALL_CLUSTERS[@]}"; do
    capture corefile "<corefile:$(ctx "$cluster")>" \
      kubectl --context "$(ctx "$cluster")" -n kube-system get configmap coredns -o 'jsonpath={.data.Corefile}'
    out="$STATE_DIR/coredns/$cluster.yaml"
    coredns_configmap "$corefile" >"$out"
    note "rendered $out (CoreDNS hosts for $(awk '{print $2}' "$(hosts_file)" | paste -sd' ' -))"
    run kubectl --context "$(ctx "$cluster")" replace -f "$out"
    run kubectl --context "$(ctx "$cluster")" -n kube-system rollout restart deployment/coredns
    run kubectl --context "$(ctx "$cluster")" -n kube-system rollout status deployment/coredns --timeout="$ROLLOUT_TIMEOUT"
  done
}

# run_bg LOGFILE PIDFILE CMD...: starts CMD in the background, output to LOGFILE, pid to PIDFILE.
run_bg() {
  local logfile=$1 pidfile=$2
  shift 2
  if is_dry_run; then
    printf '+ %s >%s 2>&1 &\n' "$(shell_quote "$@")" "$(shell_quote "$logfile")"
    return 0
  fi
  printf '+ %s >%s 2>&1 &\n' "$(shell_quote "$@")" "$(shell_quote "$logfile")" >&2
  nohup "$@" >"$logfile" 2>&1 </dev/null &
  printf '%s\n' "$!" >"$pidfile"
}

# The prefix cloud-provider-kind runs under: it manages Docker containers and, on some hosts,
# host ports, which the seed gives it through sudo. LB_SUDO= (empty) runs it as you.
lb_sudo() {
  if [[ -n ${LB_SUDO+set} ]]; then
    printf '%s' "$LB_SUDO"
  elif [[ $(id -u) == 0 ]]; then
    printf ''
  else
    printf 'sudo'
  fi
}

# The sample app's manifest: the file itself, or a copy naming SLIM_IMAGE when that was changed.
# Prints the path only (it is used in $(...)).
app_manifest() {
  local src="kind/apps/$1.yaml" out
  if [[ $SLIM_IMAGE == "$DEFAULT_SLIM_IMAGE" ]]; then
    printf '%s' "$src"
    return 0
  fi
  mkdir -p "$STATE_DIR/apps"
  out="$STATE_DIR/apps/$1.yaml"
  FROM=$DEFAULT_SLIM_IMAGE TO=$SLIM_IMAGE awk '
    BEGIN { from = ENVIRON["FROM"]; to = ENVIRON["TO"] }
    {
      rest = $0; done = ""
      while ((i = index(rest, from)) > 0) { done = done substr(rest, 1, i - 1) to; rest = substr(rest, i + length(from)) }
      print done rest
    }' "$src" >"$out"
  log "rendered $out from $src with image $SLIM_IMAGE"
  printf '%s' "$out"
}
