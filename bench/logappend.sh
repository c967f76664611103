#!/usr/bin/env bash
# Benchmark: one line appended to a log of 1 MB, 100 MB and 1 GB, to its
# notification committed: time and bytes read, which must stay flat.
# Usage: bench/logappend.sh [--runs N] [--sizes BYTES,BYTES,...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec python3 bench/logappend.py "$@"
