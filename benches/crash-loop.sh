#!/usr/bin/env bash
# The crash loop of cli/tests/crash.rs run long: a pulling client, a daemon receiving a push, a
# pushing client and a daemon serving a pull are each killed with SIGKILL at ROUNDS random
# moments (default 200), then a clean sync must leave both sides equal, no temporary file, no
# false conflict, and an index a rescan agrees with.
# Usage: benches/crash-loop.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
BOTSYNC_CRASH_ROUNDS="${1:-200}" \
    cargo test --release -p botsync --test crash -- --nocapture --test-threads 1 2>&1 |
    grep -E '^crash loop|panicked|FAILED|^test |test result'
echo "crash-loop: $(($(date +%s) - start)) s"
