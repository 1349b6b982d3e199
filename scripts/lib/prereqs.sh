# shellcheck shell=bash
# What the tests and the demo need beyond the Rust toolchain. Sourced by scripts/test and scripts/demo
# (after scripts/lib/common.sh, which provides apt_install: it installs only what is missing).

need_go() {
  command -v go >/dev/null || [ -x /usr/local/go/bin/go ] ||
    { echo "Go is required (the machine ships /usr/local/go)" >&2; exit 1; }
  export PATH="/usr/local/go/bin:$PATH"
}

# The Debian package's postinst starts a system Alertmanager (:9093, cluster :9094) wherever services
# may start (not in containers whose policy-rc.d forbids it). Nothing here uses it: the tests run their
# own Alertmanagers on free loopback ports with their own storage. Stop the one the install started so
# it does not keep running, gossiping on 0.0.0.0:9094, after the tests.
stop_packaged_alertmanager() {
  if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus-alertmanager 2>/dev/null; then
    log "stopping the system Alertmanager the package started (the tests run their own)"
    systemctl disable --now prometheus-alertmanager >&2 || true
  elif [ -x /etc/init.d/prometheus-alertmanager ] &&
    /etc/init.d/prometheus-alertmanager status >/dev/null 2>&1; then
    log "stopping the system Alertmanager the package started (the tests run their own)"
    /etc/init.d/prometheus-alertmanager stop >&2 || true
  fi
}

install_test_prereqs() {
  need_go
  # curl: scripts/kube-up's readiness probe; prometheus-alertmanager: Alertmanager 0.25 and amtool
  # for gateway/tests/e2e_alertmanager.rs; postgresql: the audit store suite.
  local pkgs=(ca-certificates curl)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || pkgs+=(postgresql)
  local fresh_alertmanager=0
  if ! command -v prometheus-alertmanager >/dev/null || ! command -v amtool >/dev/null; then
    pkgs+=(prometheus-alertmanager)
    fresh_alertmanager=1
  fi
  apt_install "${pkgs[@]}"
  if [ "$fresh_alertmanager" = 1 ]; then stop_packaged_alertmanager; fi
}

# scripts/demo: curl talks to the API server (admin client certificate from the kubeconfig) and to the
# replicas; jq builds the payloads and reads the answers. The demo uses the embedded SQLite audit
# store: no PostgreSQL, no Alertmanager.
install_demo_prereqs() {
  need_go
  apt_install ca-certificates curl jq
}

# scripts/cluster-up (the one-node cluster, docs/kube-harness.md): containerd 1.6 and runc, the CNI
# plugins (bridge, host-local, loopback, portmap in /usr/lib/cni), iptables and conntrack for kube-proxy,
# iproute2 for the bridge, curl for the readiness checks.
install_cluster_prereqs() {
  need_go
  apt_install ca-certificates curl containerd runc containernetworking-plugins iptables conntrack iproute2
}
