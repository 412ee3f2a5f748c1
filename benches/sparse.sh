#!/usr/bin/env bash
# A 2 GiB sparse image (about 1.4 MB of data) pushed to a daemon through the CLI, release build:
# it must arrive sparse. Prints the time and the receiver's allocated bytes.
# Usage: benches/sparse.sh [MIB]   (default 2048)
set -euo pipefail
cd "$(dirname "$0")/.."
BOTSYNC_SPARSE_MIB="${1:-2048}" \
    cargo test --release -p botsync --test sparse -- --nocapture 2>&1 |
    grep -E '^sparse:|^skipped|panicked|FAILED|test result'
