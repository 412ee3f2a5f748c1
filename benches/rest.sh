#!/usr/bin/env bash
# One daemon at rest on a workspace of N generated notes (benches/scale_gen.py), no peer: its
# resident set 20 s after start (the start-up rescan done, the index in memory), then once the
# daemon reports `daemon.index_in_memory: false` (after daemon.unload_index_secs, 60 s, to twice
# that, unused), five `status` calls through it (they must not load the index back), and
# glibc's malloc_stats (in use against held) when gdb is installed. Not in CI.
#
#   [BOTSYNC=target/release/botsync] [DATA=/var/tmp/botsync-rest] benches/rest.sh [N]
#
# Default N: 1,000,000 (about 8 min on a 2-core VM, 1.5 GB of disk, 1.8 GiB RSS for the scan).
# Port 127.0.0.1:47630. Leaves nothing behind.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
N=${1:-1000000}
BOTSYNC=$(realpath "${BOTSYNC:-$here/../target/release/botsync}")
DATA=${DATA:-/var/tmp/botsync-rest}
[ -x "$BOTSYNC" ] || { echo "no binary at $BOTSYNC (set BOTSYNC=)" >&2; exit 2; }
[ -e "$DATA" ] && { echo "$DATA exists; remove it or set DATA=" >&2; exit 2; }
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
    find "$DATA" -mindepth 3 -maxdepth 3 -type d -print0 2>/dev/null | xargs -0 -r -n 8 -P 8 rm -rf || true
    rm -rf "$DATA"
}
trap cleanup EXIT
mkdir -p "$DATA" && cd "$DATA"
in_memory() {
    "$BOTSYNC" -w a --json status | python3 -c 'import json, sys; print(json.load(sys.stdin)["daemon"]["index_in_memory"])'
}
rss() { awk '$1 == "VmRSS:" { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status"; }
echo "binary $BOTSYNC ($("$BOTSYNC" --version)); $N notes; $(date -u '+%F %T UTC'); load $(cut -d' ' -f1-3 /proc/loadavg)"
python3 "$here/scale_gen.py" gen a "$N" >/dev/null
"$BOTSYNC" -w a init --name a >/dev/null
python3 -c "import json, sys; p = sys.argv[1]; c = json.load(open(p)); c['local_versions'] = {'max_bytes': 0}; json.dump(c, open(p, 'w'))" a/.botsync/config.json
sleep 4   # older than the scan's racy window
echo "first scan: $( { /usr/bin/time -f '%e s, peak RSS %M KiB' "$BOTSYNC" -w a scan >/dev/null; } 2>&1 )"
"$BOTSYNC" -v -w a serve --listen 127.0.0.1:47630 >a.out 2>a.log &
pid=$!
until grep -q listening a.out 2>/dev/null; do kill -0 "$pid" || { cat a.log >&2; exit 1; }; sleep 0.5; done
t0=$(date +%s)
sleep 20
echo "20 s after start: $(rss) (index in memory: $(in_memory))"
until [ "$(in_memory)" = False ]; do
    [ $(( $(date +%s) - t0 )) -gt 600 ] && { echo "index still in memory after 600 s"; exit 1; }
    sleep 2
done
sleep 2
echo "index out of memory $(( $(date +%s) - t0 )) s after start: $(rss), peak $(awk '$1 == "VmHWM:" { printf "%d MiB", $2 / 1024 }' "/proc/$pid/status")"
times=$(for _ in 1 2 3 4 5; do { /usr/bin/time -f '%e' "$BOTSYNC" -w a status >/dev/null; } 2>&1; done | tr '\n' ' ')
echo "5 x status through the daemon: ${times}s; then $(rss), index in memory: $(in_memory)"
if command -v gdb >/dev/null; then
    gdb -p "$pid" -batch -ex 'call (void)malloc_stats()' >/dev/null 2>&1 || true
    sleep 1
    echo "malloc_stats: $(grep -A2 '^Total' a.log | tr -s ' \n' ' ')"
fi
