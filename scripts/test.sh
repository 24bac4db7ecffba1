#!/usr/bin/env bash
# Runs every check and test of Emporium on a fresh machine: installs what the tests need
# (cargo-nextest, redis-server, moto server, Chromium and chromedriver, the Kubernetes and lint
# validators, HAProxy, podman and the images the pods test runs), starts the stand-ins on free ports, then
# checks formatting and lints, runs the whole test suite, and builds the whole Dockerfile.
# Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/stand-ins.sh
source scripts/stand-ins.sh

step() { printf '\n==> %s\n' "$*"; }

ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install cargo-nextest --locked
  fi
}

step "formatting"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

ensure_nextest
step "stand-ins for DynamoDB, S3 and Redis, and a browser"
install_stand_ins
start_stand_ins target/stand-ins

step "validators for the Dockerfile, scripts, manifests and chart"
install_validators

step "HAProxy for the replicas test"
install_haproxy

step "podman and the images for the pods test"
install_podman
prepare_pod_images

step "tests"
cargo nextest run --workspace --locked --profile ci

# After the tests, which build the image's runtime stage around their own binary: every stage,
# as a user's `docker build .` runs it (about 10 minutes the first time on a machine).
step "the whole Dockerfile"
build_whole_image
