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
