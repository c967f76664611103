#!/usr/bin/env bash
# Benchmark: check, start and reload with 1,000, 10,000 and 100,000 rules,
# beside `promtool check rules` on as many Prometheus alerting rules; and
# tables of 100,000 to 5,000,000 rows: memory and the time from one row
# changed to its alert, beside `mlr join` and `wc -l`; and the resident
# memory of an idle daemon with 1,000 rules over 100 feeds.
# Usage: bench/scale.sh [--sizes 1000,10000,100000] [--runs N]
#        [--tables 100000,1000000,5000000] [--table-runs N] [--idle no]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mlr >/dev/null || { apt-get update -qq && apt-get install -y -qq miller >/dev/null; }
command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null || true; }
cargo build --release --quiet
exec python3 bench/scale_bench.py "$@"
