#!/usr/bin/env bash
# The receiver's cost of a 20,000-file initial sync, without the full e2e harness: one
# `botsync push` of the harness's `small` dataset (20,000 files of 4 KiB in 100 directories;
# DATASET=agent pushes the agent workspace instead, skills enabled as in the harness)
# into a destination daemon whose workspace is a fresh ext4 loop image each round (so no file
# system state of an earlier round, such as recently freed inodes, weighs on the next).
# Prints, per round, the client's wall time, CPU and peak RSS and the receiving daemon's CPU
# and peak RSS. With PERF=1 the daemon is profiled (`perf record -g`) into WORK/perf-N.data.
#
#   sudo benches/small-push.sh [ROUNDS] [BIN...]
#
# Several binaries alternate round by round (to compare two builds on a shared machine).
# Needs root (loop mount). Defaults: 3 rounds, target/release/botsync; WORK=/var/tmp/small-push.
set -euo pipefail

ROUNDS=${1:-3}
shift || true
BINS=("$@")
[ ${#BINS[@]} -eq 0 ] && BINS=("$(cd "$(dirname "$0")/.." && pwd)/target/release/botsync")
REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/var/tmp/small-push}
DATASET=${DATASET:-small}
SRC=$WORK/src/$DATASET
DST=$WORK/dst
IMG=$WORK/dst.img
PORT=${PORT:-7631}

stop_daemon() {
    pkill -f -- "-w $DST serve" 2>/dev/null || true
    while pgrep -f -- "-w $DST serve" >/dev/null; do sleep 0.2; done
    # A process that just exited may hold the mount for a moment more: retry, then detach.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        mountpoint -q "$DST" || break
        umount "$DST" 2>/dev/null || sleep 0.5
    done
    if mountpoint -q "$DST"; then umount -l "$DST"; fi
}
trap stop_daemon EXIT

mkdir -p "$WORK" "$DST"
if [ ! -d "$SRC" ]; then
    python3 "$REPO/benches/e2e/gen_dataset.py" generate --datasets "$DATASET" "$WORK/src" >/dev/null
fi

for ((round = 1; round <= ROUNDS; round++)); do
    for BIN in "${BINS[@]}"; do
        stop_daemon
        truncate -s 2G "$IMG"
        mkfs.ext4 -q -F "$IMG"
        mount -o loop "$IMG" "$DST"
        rm -rf "$SRC/.botsync"
        "$BIN" -w "$SRC" init --name src >/dev/null
        "$BIN" -w "$DST" init --name dst >/dev/null
        for ws in "$SRC" "$DST"; do
            python3 -c 'import json, sys
p = sys.argv[1] + "/.botsync/config.json"
c = json.load(open(p)); c["sync_skills"] = True; json.dump(c, open(p, "w"), indent=2)' "$ws"
        done
        "$BIN" -w "$SRC" add dst "127.0.0.1:$PORT" --id "$("$BIN" -w "$DST" id | awk '{print $NF}')" >/dev/null
        "$BIN" -w "$DST" add src 127.0.0.1:1 --id "$("$BIN" -w "$SRC" id | awk '{print $NF}')" >/dev/null
        "$BIN" -w "$SRC" scan >/dev/null 2>&1
        ("$BIN" -w "$DST" serve --listen "127.0.0.1:$PORT" >"$WORK/daemon.log" 2>&1 &)
        for _ in $(seq 50); do
            PID=$(pgrep -f -- "-w $DST serve" || true)
            [ -n "$PID" ] && ss -uln | grep -q ":$PORT " && break
            sleep 0.1
        done
        if [ "${PERF:-0}" = 1 ]; then
            (perf record -F 499 -g -p "$PID" -o "$WORK/perf-$round.data" >/dev/null 2>&1 &)
            sleep 0.5
        fi
        before=$(awk '{print $14 + $15}' "/proc/$PID/stat")
        client=$(/usr/bin/time -f "%e s wall, %U+%S s CPU, %M KiB" "$BIN" -w "$SRC" push dst 2>&1 >/dev/null | tail -1)
        [ "${PERF:-0}" = 1 ] && { pkill -INT -f "perf record" || true; sleep 1; }
        after=$(awk '{print $14 + $15}' "/proc/$PID/stat")
        hwm=$(awk '/VmHWM/ {print $2, $3}' "/proc/$PID/status")
        cpu=$(echo "$before $after" | awk '{printf "%.2f", ($2 - $1) / 100}')
        echo "round $round $(basename "$BIN"): client $client; daemon ${cpu} s CPU, ${hwm} peak"
    done
done
