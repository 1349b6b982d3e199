# shellcheck shell=bash
# Shared settings of scripts/cluster-up and scripts/cluster-down (the one-node cluster,
# docs/kube-harness.md "The one-node cluster"). Sourced after scripts/lib/common.sh; not executed.

CLUSTER="$ROOT/target/cluster"
CSTATE="$CLUSTER/state"              # everything a running cluster owns; wiped by cluster-down
CLOGS="$CLUSTER/logs"                # one log per component (previous run kept as *.prev)
CONTAINERD_ROOT="$CLUSTER/containerd" # images and snapshots: kept across runs (a cache, like target/)
CONTAINERD_SOCK="$CSTATE/containerd/containerd.sock"
NODE_BIN="$CLUSTER/namegate-kube-node"
APISERVER_BIN="$ROOT/target/kube-apiserver/namegate-kube-apiserver"
NODE_NAME="namegate-node"
BRIDGE="namegate0"
POD_CIDR="10.244.0.0/24"
NODE_IP="10.244.0.1" # the bridge's address: the node IP, the API server's address and the pods' gateway
SERVICE_CIDR="10.0.0.0/24"
# Started in this order, stopped in the reverse one.
CLUSTER_COMPONENTS=(containerd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)

cpid_file() { echo "$CSTATE/pids/$1"; }

# Is the pid recorded for component $1 alive and running the expected program?
component_alive() {
  local pid
  pid="$(cat "$(cpid_file "$1")" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  local want="$1"
  case "$1" in
    kube-apiserver) want=namegate-kube-apiserver ;;
    kube-controller-manager | kube-scheduler | kube-proxy | kubelet) want="namegate-kube-node $1" ;;
  esac
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$want"
}

# curl against the cluster's API server with the admin client certificate.
kcurl() { # <path> [curl args…]
  local path="$1" server
  shift
  server="$(awk '$1 == "server:" {print $2; exit}' "$CSTATE/apiserver/kubeconfig" 2>/dev/null)"
  [ -n "$server" ] || return 1
  curl -sf --max-time 5 --cacert "$CSTATE/apiserver/ca.crt" --cert "$CSTATE/apiserver/admin.crt" \
    --key "$CSTATE/apiserver/admin.key" "$@" "$server$path"
}

node_ready() {
  kcurl "/api/v1/nodes/$NODE_NAME" 2>/dev/null | tr -d ' \n' | grep -q '"type":"Ready","status":"True"'
}

# ------------------------------------------------------------------------------- the audit store
# The chart's default audit store is PostgreSQL, its URL read from the existing Secret `namegate-audit`
# (key `url`). scripts/cluster-test provides what an operator provides: a PostgreSQL the pods can reach
# (here on the node address, so on the bridge; state under $CSTATE, wiped by cluster-down), with TLS
# (a self-signed certificate: the URL says sslmode=require) and a password login for the role `namegate`,
# allowed from the pod network only. The tests put the printed URL into that Secret.
CLUSTER_PG_DIR="$CSTATE/pg"
CLUSTER_PG_BIN="${NAMEGATE_PG_BIN:-/usr/lib/postgresql/15/bin}"
CLUSTER_PG_USER=postgres # PostgreSQL refuses to run as root

cluster_pg_as() { runuser -u "$CLUSTER_PG_USER" -- "$@"; }

cluster_pg_running() {
  [ -f "$CLUSTER_PG_DIR/data/PG_VERSION" ] &&
    cluster_pg_as "$CLUSTER_PG_BIN/pg_ctl" -D "$CLUSTER_PG_DIR/data" status >/dev/null 2>&1
}

# Starts it if needed; prints the URL (postgres://namegate:<password>@<node IP>:<port>/namegate?sslmode=require).
cluster_pg_up() {
  local d="$CLUSTER_PG_DIR" port pw
  [ -x "$CLUSTER_PG_BIN/initdb" ] || { echo "PostgreSQL 15 not found in $CLUSTER_PG_BIN" >&2; return 1; }
  id "$CLUSTER_PG_USER" >/dev/null 2>&1 ||
    useradd --system --user-group --no-create-home --shell /usr/sbin/nologin "$CLUSTER_PG_USER"
  if ! cluster_pg_running; then
    rm -rf "$d"
    mkdir -p "$d"
    chown "$CLUSTER_PG_USER:" "$d"
    chmod 700 "$d"
    head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$d/password"
    cluster_pg_as "$CLUSTER_PG_BIN/initdb" -D "$d/data" -U postgres --auth-local=trust \
      --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$d/initdb.log" 2>&1 ||
      { cat "$d/initdb.log" >&2; return 1; }
    echo "hostssl namegate namegate $POD_CIDR scram-sha-256" >>"$d/data/pg_hba.conf"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=$NODE_IP" \
      -keyout "$d/data/server.key" -out "$d/data/server.crt" >/dev/null 2>&1 ||
      { echo "openssl could not make the server certificate" >&2; return 1; }
    chown "$CLUSTER_PG_USER:" "$d/data/server.key" "$d/data/server.crt"
    chmod 600 "$d/data/server.key"
    port=55480
    while (exec 3<>"/dev/tcp/$NODE_IP/$port") 2>/dev/null; do port=$((port + 1)); done
    echo "$port" >"$d/port"
    cluster_pg_as "$CLUSTER_PG_BIN/pg_ctl" -D "$d/data" -l "$d/postgres.log" -w -t 60 start \
      -o "-p $port -k $d -c listen_addresses=$NODE_IP -c ssl=on -c max_connections=200" >&2 7>&- ||
      { tail -n 30 "$d/postgres.log" >&2; return 1; }
    pw="$(cat "$d/password")"
    cluster_pg_as "$CLUSTER_PG_BIN/psql" -X -q -h "$d" -p "$port" -U postgres -d postgres \
      -c "CREATE ROLE namegate LOGIN PASSWORD '$pw'" -c "CREATE DATABASE namegate OWNER namegate" >&2 ||
      return 1
  fi
  echo "postgres://namegate:$(cat "$d/password")@$NODE_IP:$(cat "$d/port")/namegate?sslmode=require"
}

cluster_pg_down() {
  if cluster_pg_running; then
    cluster_pg_as "$CLUSTER_PG_BIN/pg_ctl" -D "$CLUSTER_PG_DIR/data" -m fast -w -t 60 stop >&2 || true
  fi
}

# ------------------------------------------------------------------------------- the host's share
# The bridge, its addresses, the components' fixed ports and the iptables chains are the host's, not
# the checkout's: one cluster per machine. cluster-up records which checkout owns them in $HOST_OWNER
# (on /run, so a reboot, which removes the bridge and the rules too, forgets it); cluster-down removes
# the record once it has undone everything.
HOST_OWNER=/run/namegate-cluster.owner
# Fixed ports of the components (127.0.0.1, and the kubelet's on the node address).
CLUSTER_PORTS=(10248 10249 10250 10256 10257 10259)

# Does the checkout $1 still run a component of its cluster?
cluster_of_alive() {
  local root="$1" f pid
  for f in "$root"/target/cluster/state/pids/*; do
    [ -f "$f" ] || continue
    pid="$(cat "$f" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && return 0
  done
  return 1
}

# What a cluster of an unknown checkout left on the host (one line each; nothing when clean).
host_leftovers() {
  ip link show "$BRIDGE" >/dev/null 2>&1 && echo "the bridge $BRIDGE exists"
  iptables -w -t nat -S 2>/dev/null | grep -q -- '-N KUBE-SERVICES' && echo "iptables has kube-proxy's KUBE-* chains"
  local p
  for p in $(pgrep -f "namegate-kube-node kube|namegate-kube-apiserver .*--address $NODE_IP|containerd --config .*/target/cluster/state/" || true); do
    echo "process $p still runs: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-160)"
  done
}

# ------------------------------------------------------------------------------ the test phase
# The cluster tests (e2e/tests/cluster.rs): the last phase of scripts/test (after its `cargo test
# --workspace`), and all that scripts/cluster-test runs (docs/kube-harness.md, "The tests" and
# "Budget"); this is their one implementation.
# Needs scripts/lib/{common,prereqs,helm}.sh sourced and root. The caller's EXIT trap must call
# cluster_tests_cleanup, which stops the cluster (and its PostgreSQL) again unless CLUSTER_TEST_KEEP is
# set — also when the phase failed half-way.
#
# The image takes the gateway binaries `cargo test --workspace --no-run` built, and the cluster tests
# are built with the same package selection plus the `cluster` feature of namegate-e2e, which enables
# no dependency feature: the dependency tree built for the other tests is reused as it is and only
# namegate-e2e is compiled again.
CLUSTER_TESTS_STARTED=0
CLUSTER_PHASE_LOCK=/run/lock/namegate-cluster-tests.lock

run_cluster_tests() { # [test binary args…]
  [ "$(id -u)" = 0 ] || { log "the cluster tests need root (containerd, runc, CNI, iptables)"; return 1; }
  install_cluster_prereqs
  ensure_helm # exports HELM

  local target="${CARGO_TARGET_DIR:-$ROOT/target}"
  log "building the cluster tests (cargo test --workspace --features namegate-e2e/cluster --test cluster)"
  cargo test --workspace --locked --no-run
  cargo test --workspace --locked --features namegate-e2e/cluster --test cluster --no-run

  # Two checkouts (or a CI run and a developer) share one host: the second waits for the first's phase.
  # fd 7 holds the lock for this shell's life; cluster-up and cluster_pg_up close it for the daemons
  # they start, so a cluster kept running (CLUSTER_TEST_KEEP) does not hold it (cluster-up refuses
  # another checkout's start while it runs).
  mkdir -p "$(dirname "$CLUSTER_PHASE_LOCK")"
  exec 7>"$CLUSTER_PHASE_LOCK"
  if ! flock -n 7; then
    log "another checkout runs the cluster tests on this host; waiting up to ${CLUSTER_LOCK_TIMEOUT:-1800}s"
    flock -w "${CLUSTER_LOCK_TIMEOUT:-1800}" 7 || {
      log "gave up waiting for $CLUSTER_PHASE_LOCK, held by: $(fuser "$CLUSTER_PHASE_LOCK" 2>&1 | tr -s ' ')"
      return 1
    }
  fi

  CLUSTER_TESTS_STARTED=1
  log "starting the one-node cluster"
  local line
  line="$("$ROOT/scripts/cluster-up")"
  log "$line"

  log "starting the audit store (PostgreSQL with TLS on the node address, for the chart's default audit.existingSecret)"
  NAMEGATE_CLUSTER_AUDIT_URL="$(cluster_pg_up)"
  export NAMEGATE_CLUSTER_AUDIT_URL

  log "packaging the namegate image from the test build's binaries ($target/debug) and importing it"
  "$ROOT/scripts/image" namegate --from "$target/debug" --import "$CONTAINERD_SOCK" >/dev/null

  # A kept cluster (CLUSTER_TEST_KEEP=1) still runs the releases of the tests that failed before: each
  # holds 300m of the node's 2 CPUs in requests, so a few of them leave the next tests' pods Pending.
  local ns
  for ns in $(KUBECONFIG="${line#KUBECONFIG=}" "$HELM" list --all-namespaces --no-headers 2>/dev/null |
    awk '$1 == "namegate" {print $2}'); do
    log "uninstalling the release left in $ns by an earlier run"
    KUBECONFIG="${line#KUBECONFIG=}" "$HELM" uninstall namegate --namespace "$ns" --wait >&2 || true
  done

  log "cargo test --features namegate-e2e/cluster --test cluster"
  KUBECONFIG="${line#KUBECONFIG=}" cargo test --workspace --locked --features namegate-e2e/cluster \
    --test cluster -- --include-ignored --test-threads=1 "$@"
}

cluster_tests_cleanup() { # <exit status of the caller>
  [ "$CLUSTER_TESTS_STARTED" = 1 ] || return 0
  # cluster-down wipes the state dir: keep the pods' logs of a failed run (target/cluster/logs/pods,
  # replaced by the next failure) beside the components' logs.
  if [ "${1:-0}" != 0 ] && [ -d "$CSTATE/pod-logs" ]; then
    rm -rf "$CLOGS/pods"
    cp -a "$CSTATE/pod-logs" "$CLOGS/pods" 2>/dev/null || true
    log "the cluster tests failed: pod logs kept in $CLOGS/pods, component logs in $CLOGS"
  fi
  if [ -n "${CLUSTER_TEST_KEEP:-}" ]; then
    log "CLUSTER_TEST_KEEP is set: the cluster keeps running (scripts/cluster-down stops it)"
    return 0
  fi
  "$ROOT/scripts/cluster-down" >&2
}
