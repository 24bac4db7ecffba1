#!/usr/bin/env bash
# Benchmarks of Emporium on the embedded mode, each against a baseline measured in the same run
# on the same machine: a minimal actix-web server answering the same bytes from memory
# (emporium-baseline), the practical ceiling. Not part of the test command.
#
# Measures: start to ready; a catalog product read (cache hit) and a storefront product page,
# as requests/s relative to the baseline (wrk, 64 connections); the checkout mix at 64 shoppers
# (emporium load: p99), with every SKU restocked so checkouts run throughout; the events
# published and handled per second under that mix and the lag from a producer's commit to the
# consumer's effect (p50, p99); the RSS of
# `emporium up` idle and at its peak under load.
# Prints a table and writes it to target/bench/results.md.
#
# Usage: scripts/bench.sh [seconds per measurement, default 10]
# EMPORIUM_BIN=<path> measures another build of `emporium` (an A/B of two builds in one session)
# against the same baseline.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH="${1:-10}"
EMPORIUM="${EMPORIUM_BIN:-target/release/emporium}"
CONNECTIONS=64
OUT=target/bench
mkdir -p "$OUT"

if ! command -v wrk >/dev/null 2>&1; then
  echo "installing wrk (Debian)"
  if [ "$(id -u)" -eq 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo apt-get install -y -qq wrk >/dev/null; fi
fi

echo "==> building (release)"
cargo build --release --locked --quiet --package emporium --package emporium-loadgen

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

DATA="$(mktemp -d)"
STOREFRONT="$(free_port)"
CATALOG="$(free_port)"
INVENTORY="$(free_port)"
CART="$(free_port)"
ORDER="$(free_port)"
ADMIN_KEY="bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
# Starts `emporium up` on the data directory and puts the milliseconds until the storefront
# and the catalog are ready into READY_MS; its pid is left in UP.
start_up() {
  local started
  started=$(date +%s%N)
  "$EMPORIUM" up --data-dir "$DATA" --log warn --storefront-port "$STOREFRONT" \
    --catalog-port "$CATALOG" --inventory-port "$INVENTORY" --cart-port "$CART" --order-port "$ORDER" \
    --admin-key "$ADMIN_KEY" \
    >"$OUT/up.log" 2>&1 &
  UP=$!
  PIDS+=("$UP")
  until curl -sf "http://127.0.0.1:$STOREFRONT/readyz" >/dev/null 2>&1 \
    && curl -sf "http://127.0.0.1:$CATALOG/readyz" >/dev/null 2>&1; do
    sleep 0.01
  done
  READY_MS=$(( ($(date +%s%N) - started) / 1000000 ))
}

echo "==> starting emporium up"
start_up
ready_ms=$READY_MS
# Seeding the demo on a first start is part of this figure; start again for a warm start.
kill "$UP"; wait "$UP" 2>/dev/null || true
start_up
warm_ready_ms=$READY_MS
sleep 1
rss_idle_kb=$(awk '/VmRSS/ {print $2}' "/proc/$UP/status")

PRODUCT=$(curl -s "http://127.0.0.1:$CATALOG/v1/products?limit=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
COOKIE=$(curl -s -o /dev/null -D - "http://127.0.0.1:$STOREFRONT/" | awk -F'[ ;]' 'tolower($1) == "set-cookie:" {print $2}')

rps() { # url [header]
  local args=(-t2 "-c$CONNECTIONS" "-d${SECONDS_EACH}s" --latency)
  if [ -n "${2:-}" ]; then args+=(-H "$2"); fi
  wrk "${args[@]}" "$1" | awk '/Requests\/sec/ {print $2}'
}

baseline_rps() { # body file, content type
  local port
  port="$(free_port)"
  target/release/emporium-baseline "$port" "$1" "$2" &
  local pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/"; do sleep 0.01; done
  rps "http://127.0.0.1:$port/"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

ratio() { python3 -c "print(f'{float($1) / float($2):.2f}')"; }

echo "==> catalog product read (cache hit)"
READ_URL="http://127.0.0.1:$CATALOG/v1/products/$PRODUCT"
curl -s -o "$OUT/product.json" "$READ_URL"
read_rps=$(rps "$READ_URL")
read_base=$(baseline_rps "$OUT/product.json" "application/json")

echo "==> storefront product page"
PAGE_URL="http://127.0.0.1:$STOREFRONT/p/$PRODUCT"
curl -s -H "Cookie: $COOKIE" -o "$OUT/page.html" "$PAGE_URL"
page_rps=$(rps "$PAGE_URL" "Cookie: $COOKIE")
page_base=$(baseline_rps "$OUT/page.html" "text/html; charset=utf-8")

# The demo's stock sells out within seconds at this rate, after which every checkout would stop
# at "out of stock": restock every SKU so checkouts run for the whole measurement.
echo "==> restocking every SKU"
python3 - "http://127.0.0.1:$CATALOG" "http://127.0.0.1:$INVENTORY" "$ADMIN_KEY" <<'PY'
import json, sys, urllib.request
catalog, inventory, key = sys.argv[1:4]
cursor = None
while True:
    url = f"{catalog}/v1/products?limit=100" + (f"&cursor={cursor}" if cursor else "")
    page = json.load(urllib.request.urlopen(url))
    for product in page["items"]:
        request = urllib.request.Request(
            f"{inventory}/v1/stock/{product['sku']}", method="PUT",
            data=json.dumps({"available": 1_000_000}).encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        urllib.request.urlopen(request).read()
    cursor = page.get("next_cursor")
    if not cursor:
        break
PY

# The events' counts before the mix, so what it moved is read as a difference.
scrape_events() { # file
  for port in "$INVENTORY" "$CART" "$ORDER"; do
    curl -s "http://127.0.0.1:$port/metrics" | grep -E '_events_(lag_seconds|handled_total|published_total)' || true
  done >"$1"
}
scrape_events "$OUT/events-before.txt"

echo "==> checkout mix, $CONNECTIONS shoppers"
"$EMPORIUM" load --target "http://127.0.0.1:$STOREFRONT" --users "$CONNECTIONS" \
  --duration "$((SECONDS_EACH * 3))s" --ramp-up 2s --quiet \
  --out "$OUT/load.json" --html "$OUT/load.html" >"$OUT/load.txt"
read -r mix_p99 mix_rps mix_errors mix_orders < <(python3 -c "
import json; r = json.load(open('$OUT/load.json'))
print(f\"{r['latency']['p99_ms']:.1f} {r['throughput_rps']:.0f} {r['errors']} {r['business']['orders_placed']}\")")
rss_peak_kb=$(awk '/VmHWM/ {print $2}' "/proc/$UP/status")
checkout_p99=$(python3 -c "
import json; r = json.load(open('$OUT/load.json'))
print(f\"{r['by_kind']['checkout']['latency']['p99_ms']:.1f}\")")

# Events under the mix: published (order and inventory) and handled (the inventory's and the
# cart's consumers) per second, and the lag from the producer's commit to the consumer's effect,
# read from the consumers' histograms (a bucket's upper bound: within half of the true value).
sleep 2
scrape_events "$OUT/events-after.txt"
read -r events_published events_handled lag_p50 lag_p99 < <(python3 - "$OUT/events-before.txt" "$OUT/events-after.txt" "$((SECONDS_EACH * 3))" <<'PY'
import re, sys
def read(path):
    values = {}
    for line in open(path):
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        values[name] = float(value)
    return values
before, after, seconds = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
moved = {name: value - before.get(name, 0.0) for name, value in after.items()}
published = sum(v for n, v in moved.items() if "_events_published_total" in n)
handled = sum(v for n, v in moved.items() if "_events_handled_total" in n)
buckets = {}
for name, value in moved.items():
    match = re.search(r'_events_lag_seconds_bucket\{.*le="([^"]+)"', name)
    if match and match.group(1) != "+Inf":
        bound = float(match.group(1))
        buckets[bound] = buckets.get(bound, 0.0) + value
total = sum(v for n, v in moved.items() if "_events_lag_seconds_count" in n)
def quantile(q):
    for bound in sorted(buckets):
        if total and buckets[bound] >= q * total:
            return f"{bound * 1000:.1f}"
    return "inf"
print(f"{published / seconds:.0f} {handled / seconds:.0f} {quantile(0.5)} {quantile(0.99)}")
PY
)

{
  echo "| measurement | result | target |"
  echo "|---|---|---|"
  echo "| product read (catalog, cache hit) | $read_rps req/s = $(ratio "$read_rps" "$read_base") × baseline ($read_base) | ≥ 0.6 × |"
  echo "| product page (storefront) | $page_rps req/s = $(ratio "$page_rps" "$page_base") × baseline ($page_base) | ≥ 0.3 × |"
  echo "| checkout mix, $CONNECTIONS shoppers | p99 $mix_p99 ms at $mix_rps req/s (checkouts: p99 $checkout_p99 ms), $mix_orders orders, $mix_errors errors | p99 ≤ 35 ms |"
  echo "| events under the mix (embedded bus) | $events_published published/s, $events_handled handled/s; commit to effect p50 ≤ $lag_p50 ms, p99 ≤ $lag_p99 ms | p99 < 50 ms |"
  echo "| RSS of emporium up | idle $((rss_idle_kb / 1024)) MB, peak under load $((rss_peak_kb / 1024)) MB | < 100 MB |"
  echo "| start to ready | first start (seeds the demo) ${ready_ms} ms, warm start ${warm_ready_ms} ms | < 1 s |"
} | tee "$OUT/results.md"
echo "(machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | xargs))" | tee -a "$OUT/results.md"
