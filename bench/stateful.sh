#!/usr/bin/env bash
# Benchmark: stateful rules (threshold with resolve, count within 1h,
# changed) over 1,000,000 rows spread over 100,000 keys, beside
# `mlr step -a shift_lag -g key` on the same rows as CSV.
# Usage: bench/stateful.sh [--keys N] [--rounds N] [--runs N] [--one-by-one]
#        [--engine-only]
set -euo pipefail
cd "$(dirname "$0")/.."
command -v mlr >/dev/null || { apt-get update -qq && apt-get install -y -qq miller >/dev/null; }
exec cargo bench --quiet --bench stateful -- "$@"
