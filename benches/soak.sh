#!/usr/bin/env bash
# The soak of cli/tests/soak.rs run long: five daemons in a full mesh with auto-sync on,
# random edits on all of them for SECS seconds (default 600), then convergence, no lost line,
# and each daemon's RSS at start, peak and at rest. Usage: benches/soak.sh [SECS] [SEED]
set -euo pipefail
cd "$(dirname "$0")/.."
BOTSYNC_SOAK_SECS="${1:-600}" BOTSYNC_SOAK_SEED="${2:-20682}" \
    cargo test --release -p botsync --test soak -- --nocapture 2>&1 |
    grep -E '^soak:|panicked|FAILED|^  memory|test result'
