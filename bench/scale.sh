#!/usr/bin/env bash
# Benchmark: check, start and reload with 1,000, 10,000 and 100,000 rules,
# beside `promtool check rules` on as many Prometheus alerting rules.
# Usage: bench/scale.sh [--sizes 1000,10000,100000] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null || true; }
cargo build --release --quiet
exec python3 bench/scale_bench.py "$@"
