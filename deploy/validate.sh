#!/usr/bin/env bash
# Validates deploy/ offline; fails on any error (ctest runs it: deploy_validate).
#   1. renders every Kustomize tree with `kubectl kustomize` (overlays/cpu, overlays/gpu,
#      monitoring, and secrets with throwaway files) into OUT_DIR;
#   2. validates every rendered object against the Kubernetes schemas (npm kubernetes-models;
#      unknown fields with @kubernetes/client-node's field lists)
#      and the ServiceMonitor against the Prometheus Operator's (@kubernetes-models/
#      prometheus-operator), plus the project's own rules (deploy/validate/validate.mjs);
#   3. lints the Dockerfile (dockerfile-utils, dockerfilelint) and checks its structure
#      (deploy/validate/dockerfile_check.mjs);
#   4. checks deploy/prometheus/prometheus.yml with promtool.
#
#   deploy/validate.sh [OUT_DIR]        (default: build/deploy-rendered)
#
# The npm packages are pinned in deploy/validate/package-lock.json and installed here (npm ci)
# when missing or when the lock changed.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$REPO/build/deploy-rendered}"
VAL="$REPO/deploy/validate"
mkdir -p "$OUT"

need() { command -v "$1" >/dev/null || { echo "FAIL: $1 not found ($2)" >&2; exit 1; }; }
need node "Debian package nodejs, in deploy/debian-packages.txt"
if ! command -v npm >/dev/null; then
  # Debian's nodejs comes without npm; the nodesource build that some machines have includes it
  # (and conflicts with Debian's npm package), so npm is installed only where it is missing.
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null
  fi
  need npm "Debian package npm"
fi
need kubectl "kubectl kustomize renders the overlays"
need promtool "Debian package prometheus"

# npm ci only when node_modules does not match the lock.
stamp="$VAL/node_modules/.mq-lock.sha256"
lock_sum=$(sha256sum "$VAL/package-lock.json" | cut -d' ' -f1)
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" ]]; then
  echo "installing the validators (npm ci in deploy/validate)"
  (cd "$VAL" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$lock_sum" >"$stamp"
fi

# 1. Render. The secrets tree reads files an operator creates; here, throwaway ones.
K8S="$REPO/deploy/k8s"
for tree in overlays/cpu overlays/gpu monitoring; do
  name=$(basename "$tree")
  kubectl kustomize "$K8S/$tree" >"$OUT/$name.yaml" || { echo "FAIL: kubectl kustomize $tree" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r "$K8S/secrets" "$tmp/secrets"
mkdir -p "$tmp/secrets/files"
for f in tls.crt tls.key ca.crt tokens worker; do echo "placeholder-not-a-secret" >"$tmp/secrets/files/$f"; done
kubectl kustomize "$tmp/secrets" >"$OUT/secrets.yaml" || { echo "FAIL: kubectl kustomize secrets" >&2; exit 1; }
echo "rendered: $(cd "$OUT" && ls *.yaml | tr '\n' ' ')"

# 2. Schemas and rules.
node "$VAL/validate.mjs" --metrics "$REPO/docs/observability.md" \
  cpu="$OUT/cpu.yaml" gpu="$OUT/gpu.yaml" monitoring="$OUT/monitoring.yaml" secrets="$OUT/secrets.yaml"
# ...and those checks fire: broken copies of the rendered manifests must each be rejected.
node "$VAL/validate_selftest.mjs" "$OUT" "$REPO/docs/observability.md" >"$tmp/selftest.txt" ||
  { cat "$tmp/selftest.txt" >&2; echo "FAIL: validate.mjs let a broken manifest through" >&2; exit 1; }
tail -n 1 "$tmp/selftest.txt"

# 3. Dockerfile.
"$VAL/node_modules/.bin/dockerfile-utils" lint "$REPO/Dockerfile" || { echo "FAIL: dockerfile-utils lint" >&2; exit 1; }
"$VAL/node_modules/.bin/dockerfilelint" -c "$VAL" "$REPO/Dockerfile" >"$tmp/dockerfilelint.txt" ||
  { cat "$tmp/dockerfilelint.txt" >&2; echo "FAIL: dockerfilelint" >&2; exit 1; }
node "$VAL/dockerfile_check.mjs" "$REPO/Dockerfile"

# 4. Prometheus configuration.
promtool check config "$REPO/deploy/prometheus/prometheus.yml" >/dev/null ||
  { promtool check config "$REPO/deploy/prometheus/prometheus.yml" >&2; echo "FAIL: promtool check config" >&2; exit 1; }

echo "deploy/ valid"
