# shellcheck shell=bash
# Helm for the chart tests (docs/kube-harness.md): built from Go modules with `go install`, cached under
# target/tools/bin. Sourced after scripts/lib/common.sh (needs ROOT and log); not executed.
#
#   source scripts/lib/common.sh; source scripts/lib/helm.sh; ensure_helm   # exports HELM=<path>
#
# Environment:
#   HELM_VERSION   the helm.sh/helm/v3 module version to build (default below)
#
# A cold build (module download + compile, 2 cores) takes a few minutes; afterwards the cached binary
# is reused as long as it reports the requested version.

NAMEGATE_HELM_VERSION_DEFAULT="v3.19.5"

ensure_helm() {
  local version="${HELM_VERSION:-$NAMEGATE_HELM_VERSION_DEFAULT}"
  local bindir="$ROOT/target/tools/bin"
  local bin="$bindir/helm"
  local stamp="$bindir/.helm.version"
  local want="$version kubeversion-from-client-go"
  local go=go
  command -v go >/dev/null 2>&1 || go=/usr/local/go/bin/go

  mkdir -p "$bindir"
  # Serialise concurrent builds (the demo and the tests may both need helm).
  (
    flock 8
    if [ -x "$bin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
      log "helm $version: reusing $bin"
      exit 0
    fi
    command -v "$go" >/dev/null 2>&1 || { log "helm: no Go toolchain (need go on PATH or /usr/local/go)"; exit 1; }
    log "helm $version: building with go install (cached afterwards in $bindir)"
    local start=$SECONDS
    rm -f "$stamp"
    export GOTOOLCHAIN=local CGO_ENABLED=0
    # Like helm's Makefile: the default .Capabilities.KubeVersion (helm template, helm lint) is the
    # client-go minor helm was built with; a plain `go install` would leave it at v1.20.0.
    local gomod k8s_minor
    gomod="$("$go" mod download -json "helm.sh/helm/v3@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')"
    k8s_minor="$(awk '$1 == "k8s.io/client-go" {split($2, v, "."); print v[2]; exit}' "$gomod" 2>/dev/null)"
    [ -n "$k8s_minor" ] || { log "helm: cannot read the client-go version of helm.sh/helm/v3@$version"; exit 1; }
    local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
    ldflags+=" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$k8s_minor"
    ldflags+=" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=$k8s_minor"
    GOBIN="$bindir" "$go" install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$version" >&2 \
      || { log "helm: go install helm.sh/helm/v3/cmd/helm@$version failed"; exit 1; }
    "$bin" version --short >/dev/null 2>&1 || { log "helm: the built binary does not run"; exit 1; }
    printf '%s\n' "$want" >"$stamp"
    log "helm $version: built in $((SECONDS - start)) s"
  ) 8>"$bindir/.helm.lock" || return 1

  HELM="$bin"
  export HELM
  log "HELM=$HELM ($("$HELM" version --short 2>/dev/null))"
}
