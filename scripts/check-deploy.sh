#!/usr/bin/env bash
# Validates deploy/ without a container engine or a cluster (scripts/test.sh runs it):
#   - every YAML file parses (yamllint, relaxed rules);
#   - the Kustomize base and both overlays build (kubectl kustomize) and every object is valid
#     for Kubernetes 1.31 (kubernetes-validate --strict; CRDs such as SecretProviderClass and
#     PodMonitor have no schema there and are only built);
#   - the Prometheus config and alert rules pass promtool;
#   - the Grafana dashboard is valid JSON;
#   - every stockgate_* metric the rules and the dashboard use exists in the code;
#   - the compose file renders (`docker compose config`) when the compose plugin exists,
#     else it is only linted (said so in the output);
#   - the workloads of each build (scripts/check-workloads.py): no `replicas` on a Deployment
#     an HPA scales, each pod sees only its own workload's secrets (on AKS through its own
#     identity), every stockgate liveness probe (and settlement's readiness) is on the admin
#     listener, not the public one, a LoadBalancer/NodePort Service of the gateway keeps
#     client addresses (externalTrafficPolicy: Local) and its trusted_proxies are CIDRs that do not trust
#     everyone, a NetworkPolicy admits settlement's API port from gateway pods only; and each
#     of those checks reports planted mistakes (--self-test).
# Installs what is missing: kubectl (apt), promtool (apt `prometheus`), yamllint,
# kubernetes-validate and PyYAML (pip).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n== %s\n' "$*"; }
sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
apt_install() {
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@"
}
command -v kubectl >/dev/null || apt_install kubectl
command -v promtool >/dev/null || apt_install prometheus
command -v yamllint >/dev/null || pip install -q yamllint
command -v kubernetes-validate >/dev/null || pip install -q kubernetes-validate
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml

log "yamllint deploy/"
yamllint -d '{extends: relaxed, rules: {line-length: {max: 140}}}' deploy

log "kubectl kustomize + kubernetes-validate (base, overlays/local, overlays/aks)"
out="$(mktemp -d)"; trap 'rm -rf "$out"' EXIT
for dir in base overlays/local overlays/aks; do
  name="${dir//\//-}"
  kubectl kustomize "deploy/k8s/$dir" >"$out/$name.yaml"
  kubernetes-validate --strict -k 1.31.0 --quiet "$out/$name.yaml" 2>&1 \
    | grep -v "Couldn't find schema for kind \(SecretProviderClass\|PodMonitor\)" || true
  # kubernetes-validate prints failures but its exit code is what counts.
  kubernetes-validate --strict -k 1.31.0 --quiet --no-warn "$out/$name.yaml" >/dev/null
  echo "$dir: $(grep -c '^kind:' "$out/$name.yaml") objects valid"
done

log "promtool"
promtool check rules deploy/prometheus/alerts.yml
(cd deploy/prometheus && promtool check config prometheus.yml)

log "grafana dashboard"
python3 -m json.tool deploy/grafana/dashboards/stockgate.json >/dev/null
echo "deploy/grafana/dashboards/stockgate.json: valid JSON"

log "metric names used by alerts and dashboard exist in the code"
missing=0
for metric in $(grep -ohE 'stockgate_[a-z_]+' deploy/prometheus/alerts.yml deploy/grafana/dashboards/stockgate.json \
    | sed -E 's/_(bucket|sum|count)$//' | sort -u); do
  if ! grep -rqF "\"$metric\"" gateway/src settlement/src; then
    echo "unknown metric: $metric" >&2
    missing=1
  fi
done
[ "$missing" -eq 0 ] || exit 1
echo "every metric name is registered in gateway/src or settlement/src"

log "workloads: HPA-managed replicas, secrets per pod, probes off the public listener, client addresses, settlement ingress"
builds=(base="$out/base.yaml" local="$out/overlays-local.yaml" aks="$out/overlays-aks.yaml")
python3 scripts/check-workloads.py "${builds[@]}"
python3 scripts/check-workloads.py --self-test "${builds[@]}"

log "compose"
if docker compose version >/dev/null 2>&1; then
  docker compose -f deploy/compose.yaml config --quiet && echo "deploy/compose.yaml renders"
else
  echo "no docker compose plugin here: deploy/compose.yaml checked by yamllint only"
fi
echo "check-deploy: ok"
