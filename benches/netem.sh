#!/usr/bin/env bash
# Throughput of a pull across an impaired link: 1 % loss (BOTSYNC_NETEM_LOSS), 50 ms each way,
# MTU 1280, through the user-space proxy of cli/tests/common/netem.rs. Both peers and the proxy
# use a non-127/8 address (added to `lo` for the run), so botsync picks its non-loopback
# (Tailscale) transport. Needs root. Usage: benches/netem.sh [MiB]
set -euo pipefail
cd "$(dirname "$0")/.."
ADDR=10.213.0.1
ip addr add "$ADDR/32" dev lo
trap 'ip addr del "$ADDR/32" dev lo' EXIT
BOTSYNC_NETEM_IP=$ADDR BOTSYNC_NETEM_MB="${1:-16}" \
    cargo test --release -p botsync --test netem -- --ignored --nocapture throughput 2>&1 |
    grep -E '^netem:|panicked|FAILED'
