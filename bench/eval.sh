#!/usr/bin/env bash
# Benchmark: `tocsin eval` with 100 rules over 1,000,000 JSONL trade records,
# beside jq on the same file. Usage: bench/eval.sh [--records N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq >/dev/null; }
cargo build --release --quiet
exec python3 bench/eval_bench.py "$@"
