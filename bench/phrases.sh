#!/usr/bin/env bash
# Benchmark: 1,000 phrase rules (10,000 phrases) over 1,000,000 news-like
# records, beside ripgrep with the same phrases on the same file, and
# against tocsin itself with 100 phrases.
# Usage: bench/phrases.sh [--records N] [--runs N]
set -euo pipefail
cd "$(dirname "$0")/.."
# ripgrep 14 or later (Debian's 13 takes hours with -i and many phrases);
# built from crates.io into bench/data/tools when the one on PATH is older.
rg=rg
version=$( (rg --version 2>/dev/null || echo "ripgrep 0") | head -1 | awk '{print $2}')
if [ "${version%%.*}" -lt 14 ]; then
    [ -x bench/data/tools/bin/rg ] || cargo install ripgrep --locked --quiet --root bench/data/tools
    rg=bench/data/tools/bin/rg
fi
cargo build --release --quiet
exec python3 bench/phrases_bench.py --rg "$rg" "$@"
