#!/usr/bin/env bash
# Peak memory of both daemons in an initial sync of N generated notes (benches/scale_gen.py,
# 1,000 per directory), no root needed: workspaces a and b under DATA, a daemon on each, one
# `botsync -w a sync b` through a's daemon, then the wall time and both daemons' VmHWM (peak)
# and VmRSS. With HEAPTRACK=1 the sending daemon runs under heaptrack (DATA/a.heap.zst is kept
# and its path printed). With SETTLE=1, b starts as hard links to a's notes, scanned on its own,
# and the sync settles the two (every version vector merged: benches/scale.sh's settling sync).
# With REST=1 it then waits until both daemons let go of their index and reads what they hold at
# rest. Local versions off, as in benches/scale.sh. Not in CI.
#
#   [BOTSYNC=target/release/botsync] [DATA=/var/tmp/botsync-peak] [HEAPTRACK=1] [SETTLE=1] [REST=1]
#   benches/peak.sh [N]
#
# Default N: 20,000. Ports 127.0.0.1:47620 (a) and :47621 (b).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
N=${1:-20000}
BOTSYNC=$(realpath "${BOTSYNC:-$here/../target/release/botsync}")
DATA=${DATA:-/var/tmp/botsync-peak}
[ -x "$BOTSYNC" ] || { echo "no binary at $BOTSYNC (set BOTSYNC=)" >&2; exit 2; }
[ -e "$DATA" ] && { echo "$DATA exists; remove it or set DATA=" >&2; exit 2; }
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${HEAPTRACK:-}" ]; then find "$DATA" -mindepth 1 -maxdepth 1 ! -name 'a.heap*' -exec rm -rf {} +
    else rm -rf "$DATA"; fi
}
trap cleanup EXIT
mkdir -p "$DATA" && cd "$DATA"
bs() { "$BOTSYNC" "$@"; }
python3 "$here/scale_gen.py" gen a "$N" >/dev/null
mkdir b
[ -n "${SETTLE:-}" ] && cp -al a/memory b/
bs -w a init --name a >/dev/null && bs -w b init --name b >/dev/null
for w in a b; do
    python3 -c "import json, sys; p = sys.argv[1]; c = json.load(open(p)); c['local_versions'] = {'max_bytes': 0}; json.dump(c, open(p, 'w'))" $w/.botsync/config.json
done
bs -w a add b 127.0.0.1:47621 --id "$(bs -w b id)" >/dev/null
bs -w b add a 127.0.0.1:47620 --id "$(bs -w a id)" >/dev/null
sleep 4 && bs -w a scan >/dev/null
[ -n "${SETTLE:-}" ] && bs -w b scan >/dev/null
wrap=()
[ -n "${HEAPTRACK:-}" ] && wrap=(heaptrack -o "$DATA/a.heap")
"${wrap[@]}" "$BOTSYNC" -w a serve --listen 127.0.0.1:47620 >a.out 2>a.log &
pids+=($!)
"$BOTSYNC" -w b serve --listen 127.0.0.1:47621 >b.out 2>b.log &
pids+=($!)
until grep -q listening a.out 2>/dev/null && grep -q listening b.out 2>/dev/null; do sleep 0.2; done
sleep 2
pa=$(pgrep -f -- "-w a serve --listen 127.0.0.1:47620" | tail -1)
pb=$(pgrep -f -- "-w b serve --listen 127.0.0.1:47621" | tail -1)
t0=$(date +%s.%N)
bs -w a sync b >/dev/null
t1=$(date +%s.%N)
kib() { awk -v k="$2:" '$1 == k { printf "%d MiB", $2 / 1024 }' "/proc/$1/status"; }
echo "binary $BOTSYNC; $N notes${SETTLE:+ (settled: b identical, scanned alone)}; sync $(python3 -c "print(round($t1 - $t0, 2))") s; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "sender a: peak $(kib "$pa" VmHWM), now $(kib "$pa" VmRSS); receiver b: peak $(kib "$pb" VmHWM), now $(kib "$pb" VmRSS)"
[ -n "${HEAPTRACK:-}" ] && echo "heap profile of a: $DATA/a.heap.zst (after the daemons stop)"
if diff -r --exclude=.botsync a b >/dev/null; then echo "diff -r a b: identical"; else echo "diff -r a b: DIFFERENT"; exit 1; fi
if [ -n "${REST:-}" ]; then
    # Until both daemons let go of their index (daemon.unload_index_secs unused, 60-120 s),
    # at most 600 s; then what they hold at rest.
    in_memory() { "$BOTSYNC" -w "$1" --json status | python3 -c 'import json, sys; print(json.load(sys.stdin)["daemon"]["index_in_memory"])'; }
    t2=$(date +%s)
    while [ "$(in_memory a)" != False ] || [ "$(in_memory b)" != False ]; do
        [ $(( $(date +%s) - t2 )) -lt 600 ] || { echo "index still in memory after 600 s"; break; }
        sleep 5
    done
    sleep 12 # a give-back tick of the allocator (cli/src/daemon/malloc.rs)
    echo "at rest ($(( $(date +%s) - t2 )) s after the sync): sender a $(kib "$pa" VmRSS), receiver b $(kib "$pb" VmRSS)"
fi
