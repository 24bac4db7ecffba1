#!/usr/bin/env bash
# Load-tests a running Emporium through the storefront's public API with the included load
# generator (`emporium load`), built in release mode. Every argument goes to `emporium load`;
# `emporium load --help` lists them. Examples:
#
#   scripts/loadtest.sh                                   # 16 shoppers for 30 s against :8080
#   scripts/loadtest.sh --users 64 --duration 2m --max-p99-ms 50
#   scripts/loadtest.sh --rate 200 --duration 1m          # open model: 200 sessions/s
#   scripts/loadtest.sh --target http://localhost:8080    # the shop on kind
#
# The JSON result goes to loadtest-result.json unless --out says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --quiet --package emporium
exec target/release/emporium load "$@"
