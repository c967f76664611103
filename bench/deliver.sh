#!/usr/bin/env bash
# Benchmark: 10,000 alerts delivered through the outbox to a local webhook
# receiver, beside wrk sending the same kind of request to the same receiver
# at the same concurrency (1: a channel delivers in order), in the same run.
# Usage: bench/deliver.sh [ALERTS]   (TOCSIN=path/to/binary to measure another build;
#        STATE=postgres://postgres@127.0.0.1/postgres to run on a fresh
#        database of that PostgreSQL server, made and dropped here)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
cargo build --release --quiet
cargo build --release --quiet --example receiver
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT

target/release/examples/receiver "$work/port" &
for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
port=$(cat "$work/port")
count() { curl -s "http://127.0.0.1:$port/count"; }

# A payload like tocsin's, for wrk.
body=$(printf '{"id":"%032d","rule":"bench","title":"Tariff above threshold","severity":"critical","state":"firing","key":"P1|1","summary":"P1 1 tariff now 200%%","body":"%0400d","source":"tariffs","labels":{},"fields":{"partner":"P1","product":"1","rate_pct":"200"},"prev":null,"link":null,"started_at":"2026-01-01T00:00:00Z","at":"2026-01-01T00:00:00Z"}' 0 0)
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '$body'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["webhook-id"] = "00000000000000000000000000000000"
wrk.headers["webhook-timestamp"] = "1767225600"
LUA
wrk_rate=$(wrk -t1 -c1 -d5s -s "$work/post.lua" "http://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')

{
  echo "partner,product,rate_pct"
  for i in $(seq "$n"); do echo "P$i,1,200"; done
} > "$work/tariffs.csv"
cat > "$work/rules.yaml" <<YAML
rules:
  - { id: bench, source: tariffs, when: { field: rate_pct, above: 157 }, notify: [hook] }
YAML
state="store/state.db"   # its own folder, as /var/lib/tocsin is in production
if [ -n "${STATE:-}" ]; then
    db="tocsin_bench_$$"
    psql -q "$STATE" -c "CREATE DATABASE $db"
    trap 'kill $(jobs -p) 2>/dev/null; psql -q "$STATE" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$work"' EXIT
    state="${STATE%/*}/$db"
fi
cat > "$work/tocsin.yaml" <<YAML
state: $state
rules: rules.yaml
sources:
  - { name: tariffs, type: file, path: tariffs.csv, key: [partner, product] }
channels:
  - { name: hook, type: webhook, url: "http://127.0.0.1:$port/" }
YAML
before=$(count)
RUST_LOG=warn ${PERF:-} "${TOCSIN:-target/release/tocsin}" run -c "$work/tocsin.yaml" 2>"$work/log" &
daemon=$!
start=$(date +%s.%N)
while [ $(( $(count) - before )) -lt "$n" ]; do sleep 0.05; done
end=$(date +%s.%N)
kill -TERM $daemon; wait $daemon || true
rate=$(echo "$n $start $end" | awk '{printf "%.0f", $1 / ($3 - $2)}')
echo "wrk (1 connection, POST of a payload):  $wrk_rate requests/s"
echo "tocsin ($n alerts: commit, deliver from the outbox, record): $rate alerts/s"
echo "$rate $wrk_rate" | awk '{printf "ratio tocsin/wrk: %.0f%% (target: at least 30%%)\n", 100 * $1 / $2}'
