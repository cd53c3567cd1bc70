#!/bin/bash
# packaging/kubernetes: every manifest validates against the Kubernetes
# OpenAPI schemas and the CRD schemas (validate_kubernetes.mjs, with npm's
# kubernetes-models, @kubernetes-models/prometheus-operator and ajv, installed
# on first use under the build dir); the validator rejects broken copies; the
# PrometheusRule is the generated copy of packaging/prometheus; the
# ConfigMap's tokenmill.toml passes tokenmilld --check-config; the grace
# period covers the preStop wait and the drain timeout.
#   kubernetes_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
k8s="$src/packaging/kubernetes"
tools="$build/kubernetes-validate"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f "$tools/.installed" ]; then
  mkdir -p "$tools"
  (cd "$tools" && npm install --no-audit --no-fund --silent --no-save \
    kubernetes-models@5.1.0 @kubernetes-models/prometheus-operator@6.0.0 ajv@8.17.1 \
    js-yaml@4.1.0 >/dev/null)
  touch "$tools/.installed"
fi
# ESM resolves packages next to the script, so it runs from the tools dir.
cp "$src/tests/packaging/validate_kubernetes.mjs" "$tools/"

echo "== schemas"
OUT_DIR="$work" node "$tools/validate_kubernetes.mjs" "$k8s"
manifests="$work/manifests.json"

echo "== the validator rejects broken manifests"
cp -r "$k8s" "$work/broken"
sed -i 's/containerPort: 8000/containerPort: "eight thousand"/' "$work/broken/daemonset.yaml"
sed -i 's/- number: 8000/- number: 70000/' "$work/broken/inferencepool.yaml"
sed -i 's/interval: 15s/interval: soon/' "$work/broken/servicemonitor.yaml"
if OUT_DIR="$work/broken" node "$tools/validate_kubernetes.mjs" "$work/broken" >"$work/broken.out"; then
  echo "FAIL: broken manifests validated"; cat "$work/broken.out"; exit 1
fi
for want in "INVALID daemonset.yaml" "INVALID inferencepool.yaml" "INVALID servicemonitor.yaml"; do
  grep -q "$want" "$work/broken.out" || { echo "FAIL: no '$want'"; cat "$work/broken.out"; exit 1; }
done

echo "== PrometheusRule is generated from packaging/prometheus"
bash "$k8s/generate-prometheusrule.sh" "$work/prometheusrule.yaml"
diff -u "$k8s/prometheusrule.yaml" "$work/prometheusrule.yaml" ||
  { echo "FAIL: run packaging/kubernetes/generate-prometheusrule.sh"; exit 1; }

echo "== the ConfigMap's config passes tokenmilld --check-config"
jq -r '.[] | select(.kind=="ConfigMap" and .metadata.name=="tokenmill-config") | .data["tokenmill.toml"]' \
  "$manifests" >"$work/tokenmill.toml"
"$build/daemon/tokenmilld" --check-config --config "$work/tokenmill.toml"

echo "== grace period covers preStop wait + drain_timeout"
ds='.[] | select(.kind=="DaemonSet") | .spec.template.spec'
grace=$(jq -r "$ds | .terminationGracePeriodSeconds" "$manifests")
prestop=$(jq -r "$ds | .containers[0].lifecycle.preStop.exec.command | join(\" \")" "$manifests")
wait_s=$(sed -n 's/.*drain --wait \([0-9]*\).*/\1/p' <<<"$prestop")
drain_s=$(sed -n 's/^drain_timeout = "\([0-9]*\)s"$/\1/p' "$work/tokenmill.toml")
[ -n "$wait_s" ] && [ -n "$drain_s" ] || { echo "FAIL: preStop '$prestop' or drain_timeout unreadable"; exit 1; }
[ "$grace" -ge $((wait_s + drain_s)) ] ||
  { echo "FAIL: terminationGracePeriodSeconds $grace < $wait_s + $drain_s"; exit 1; }
echo "grace $grace >= preStop $wait_s + drain $drain_s"
echo "== the init container gives the daemon's host paths to its uid"
uid=$(jq -r "$ds | .securityContext.runAsUser" "$manifests")
init=$(jq -r "$ds | .initContainers[] | select(.name==\"host-paths\") | .command | join(\" \")" "$manifests")
for v in data socket; do
  path=$(jq -r "$ds | .containers[0].volumeMounts[] | select(.name==\"$v\") | .mountPath" "$manifests")
  chown_args=" $(sed -n 's/.*chown \([^&;]*\).*/\1/p' <<<"$init") "
  [[ $chown_args == " $uid:$uid "* && $chown_args == *" $path "* ]] ||
    { echo "FAIL: init container '$init' does not chown $path to $uid"; exit 1; }
done
echo "host-paths: $init"
echo "kubernetes manifests: 1 passed, 0 failed"
