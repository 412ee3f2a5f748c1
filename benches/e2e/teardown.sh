#!/usr/bin/env bash
# Undo setup.sh: stop the private sshd, any botsync daemon the harness left,
# the harness's nftables counters, and unmount the benchmark file system.
# The image is kept for the next run unless --purge is given.
set -euo pipefail

BENCH_ROOT=${BENCH_ROOT:-/var/tmp/botsync-bench}
MNT=$BENCH_ROOT/mnt
SSHDIR=$BENCH_ROOT/ssh
PURGE=0
[ "${1:-}" = "--purge" ] && PURGE=1

say() { printf 'teardown: %s\n' "$*"; }

stop_pidfile() {
    local file=$1 what=$2 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "stopped $what (pid $pid)"
    fi
    rm -f "$file"
}

stop_pidfile "$SSHDIR/sshd.pid" sshd
for pidfile in "$BENCH_ROOT"/run/*.pid; do
    [ -e "$pidfile" ] && stop_pidfile "$pidfile" "botsync daemon $(basename "$pidfile" .pid)"
done

if command -v nft >/dev/null && nft list table inet botsync_bench >/dev/null 2>&1; then
    nft delete table inet botsync_bench
    say "removed nftables table inet botsync_bench"
fi
if command -v iptables >/dev/null && iptables -L BOTSYNC_BENCH -n >/dev/null 2>&1; then
    iptables -D OUTPUT -j BOTSYNC_BENCH 2>/dev/null || true
    iptables -F BOTSYNC_BENCH
    iptables -X BOTSYNC_BENCH
    say "removed iptables chain BOTSYNC_BENCH"
fi

if mountpoint -q "$MNT"; then
    umount "$MNT"
    say "unmounted $MNT"
fi
if [ "$PURGE" -eq 1 ]; then
    rm -rf "$BENCH_ROOT"
    say "removed $BENCH_ROOT"
fi
