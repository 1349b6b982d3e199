# What the tests need beyond the Rust toolchain. Sourced by scripts/test and scripts/demo.

install_test_prereqs() {
  command -v go >/dev/null || { echo "Go is required (the machine ships /usr/local/go)" >&2; exit 1; }
  export PATH="/usr/local/go/bin:$PATH"
  local pkgs=(ca-certificates)
  [ -x /usr/lib/postgresql/15/bin/postgres ] || pkgs+=(postgresql)
  command -v prometheus-alertmanager >/dev/null || pkgs+=(prometheus-alertmanager)
  apt_install "${pkgs[@]}"
}
