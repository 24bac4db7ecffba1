#!/usr/bin/env bash
# Brings Emporium up on a local kind cluster: creates the cluster if it is absent, builds the
# image, loads it into kind, installs the kustomize overlay (or, with --helm, the Helm chart),
# waits for LocalStack, the setup job and every service, and prints the shop's URL.
# Safe to run again: it reuses the cluster, rebuilds and reloads the image, restarts the services
# on it and runs the setup job again (which creates nothing twice).
#
# With --observability, also runs an OpenTelemetry Collector and Jaeger (traces), and Prometheus
# and Grafana with Emporium's dashboard (metrics).
#
# Usage: scripts/kind-up.sh [--helm] [--observability]
# Needs: docker (with a running engine), kind >= 0.24 (NetworkPolicies), kubectl; helm for --helm.
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER="${EMPORIUM_KIND_CLUSTER:-emporium}"
NAMESPACE=emporium
IMAGE=emporium:dev
SERVICES=(storefront catalog inventory cart order)
USE_HELM=false
OBSERVABILITY=false

for argument in "$@"; do
  case "$argument" in
    --helm) USE_HELM=true ;;
    --observability) OBSERVABILITY=true ;;
    -h | --help)
      sed -n '2,13p' "$0"
      exit 0
      ;;
    *)
      echo "unknown argument: $argument (try --help)" >&2
      exit 2
      ;;
  esac
done

step() { printf '\n==> %s\n' "$*"; }
fail() {
  echo "error: $*" >&2
  exit 1
}

need() {
  command -v "$1" >/dev/null 2>&1 || fail "$1 is not installed. $2"
}

step "checking prerequisites"
need docker "Install Docker: https://docs.docker.com/get-docker/"
docker info >/dev/null 2>&1 || fail "the Docker engine is not running (docker info failed). Start Docker and try again."
need kind "Install kind 0.24 or newer: https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need kubectl "Install kubectl: https://kubernetes.io/docs/tasks/tools/"
if [ "$USE_HELM" = true ]; then
  need helm "Install Helm: https://helm.sh/docs/intro/install/"
fi

step "cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "    using the existing cluster"
else
  kind create cluster --name "$CLUSTER" --config k8s/kind/cluster.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

step "building $IMAGE"
docker build --tag "$IMAGE" .

step "loading $IMAGE into kind"
kind load docker-image "$IMAGE" --name "$CLUSTER"

# The setup job runs on every install: a finished Job cannot be started again, so the old one
# goes first.
kubectl -n "$NAMESPACE" delete job --selector app.kubernetes.io/component=setup \
  --ignore-not-found >/dev/null 2>&1 || true

if [ "$USE_HELM" = true ]; then
  step "installing the Helm chart"
  # Always set (never an empty array, which bash 3.2 on macOS refuses under set -u).
  chart_values=(--set "tracing.enabled=$OBSERVABILITY" --set "monitoring.enabled=$OBSERVABILITY")
  # The namespace comes from the overlay, with its Pod Security labels; Helm's
  # --create-namespace would make one without them.
  kubectl apply -f k8s/overlays/kind/namespace.yaml
  helm upgrade --install emporium helm/emporium --namespace "$NAMESPACE" \
    "${chart_values[@]}"
else
  overlay=k8s/overlays/kind
  if [ "$OBSERVABILITY" = true ]; then
    overlay=k8s/overlays/kind-observability
  fi
  step "applying $overlay"
  kubectl apply -k "$overlay"
fi

# The image tag stays `dev` across builds, so pods only pick up a new build when restarted.
kubectl -n "$NAMESPACE" rollout restart deployment "${SERVICES[@]}" >/dev/null

step "waiting for LocalStack and Redis"
kubectl -n "$NAMESPACE" rollout status deployment/localstack --timeout=10m
kubectl -n "$NAMESPACE" rollout status deployment/redis --timeout=5m

step "waiting for the setup job (tables, bucket, demo shop)"
# Complete or failed, whichever comes first: a failed job shows its log at once instead of
# being waited on until the timeout.
setup_job_state() {
  kubectl -n "$NAMESPACE" get job --selector app.kubernetes.io/component=setup \
    -o jsonpath='{range .items[*].status.conditions[?(@.status=="True")]}{.type}{" "}{end}'
}
deadline=$((SECONDS + 600))
until state="$(setup_job_state)" && [[ "$state" == *Complete* || "$state" == *Failed* ]]; do
  [ "$SECONDS" -lt "$deadline" ] || fail "the setup job did not finish within 10 minutes"
  sleep 2
done
if [[ "$state" == *Failed* ]]; then
  kubectl -n "$NAMESPACE" logs --selector app.kubernetes.io/component=setup --all-containers \
    --tail=50 >&2 || true
  fail "the setup job failed (its log is above)"
fi

step "waiting for the services"
for service in "${SERVICES[@]}"; do
  kubectl -n "$NAMESPACE" rollout status "deployment/$service" --timeout=5m
done

if [ "$OBSERVABILITY" = true ]; then
  step "waiting for the collector, Jaeger, Prometheus and Grafana"
  for deployment in otel-collector jaeger prometheus grafana; do
    kubectl -n "$NAMESPACE" rollout status "deployment/$deployment" --timeout=5m
  done
fi

cat <<DONE

Emporium is up on kind. Open the shop:

    http://localhost:8080

Public API: http://localhost:8080/api/v1/openapi.json
Pods:       kubectl -n $NAMESPACE get pods
Load test:  see the README; tear down with scripts/kind-down.sh
DONE

if [ "$OBSERVABILITY" = true ]; then
  cat <<DONE
Traces:     kubectl -n $NAMESPACE port-forward service/jaeger 16686   then http://localhost:16686
Dashboard:  kubectl -n $NAMESPACE port-forward service/grafana 3000   then http://localhost:3000
Metrics:    kubectl -n $NAMESPACE port-forward service/prometheus 9090 then http://localhost:9090
DONE
fi
