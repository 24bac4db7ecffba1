#!/usr/bin/env bash
# Runs every check and test of Emporium on a fresh machine: installs what the tests need,
# then formatting, lints and the whole test suite. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

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
step "tests"
cargo nextest run --workspace --locked --profile ci
