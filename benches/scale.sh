#!/usr/bin/env bash
# Scaling run (issue 13; documented, not in CI): workspaces of 10,000, 100,000 and 1,000,000
# notes of 1-2 KB of random words (1,000 per directory, benches/scale_gen.py). Per size:
#   first scan   `botsync -w a scan` of a fresh workspace, no daemon: wall time, peak RSS
#   warm rescan  the same again (nothing changed): wall time, peak RSS
#   index        `du -sb` of .botsync/, its db/ (the sled index) and store/ (kept versions),
#                after the first scan and again at rest (after the daemon kept the versions
#                the first scan deferred)
#   initial sync (sizes <= INITIAL_MAX) b empty: `botsync -w a sync b` through a's daemon.
#                Larger sizes: b's notes are hard links to a's (`cp -al`; every edit below
#                replaces a file, which breaks its link), b is scanned on its own, and one
#                settling `sync b` is timed and its counts reported (that sync merges the
#                version vectors of every file, and copies every file into both stores)
# At 10^6 files: ~35 min on a 2-core VM (the initial sync ~16 min), ~2.7 GiB RSS per daemon,
# ~10 GB of disk; KEEP_VERSIONS=0 spares the 2 x 10^6 store files the daemon's deferred keep makes.
#   no-op        both daemons at rest, in sync: RUNS x `botsync -w a sync b` (median, min, max),
#                next to RUNS x `botsync --version` (the floor: process start)
#   10-file edit (1) 10 notes rewritten, then `sync b` at once (includes the daemon's refresh);
#                (2) 10 more, `scan` through the daemon, then `sync b`, each timed; then
#                `diff -r --exclude=.botsync a b`
#   daemon RSS   VmRSS and VmHWM (peak) of both daemons 15 s after the last sync (the daemon
#                trims freed memory every 10 s), then at rest: once both say their index left
#                memory (`status`: daemon.index_in_memory false; config daemon.unload_index_secs,
#                60 s: after 60-120 s unused), and after RUNS more no-op syncs at rest, each
#                timed (a no-op needs only the roots: the index stays out of memory)
# Usage: [BOTSYNC=path/to/botsync] [RUNS=20] [INITIAL_MAX=1000000] [DATA=/var/tmp/botsync-scale]
#        [LOGS=dir to keep the daemons' logs in] [KEEP_VERSIONS=0: local_versions off]
#        benches/scale.sh [SIZES...]
#        (default sizes: 10000 100000 1000000)
# Ports 127.0.0.1:47610 (a) and :47611 (b). One result line per measurement, then a markdown
# table. Leaves nothing behind (stops its daemons, removes DATA). Needs python3, GNU time, du.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
BOTSYNC=$(realpath "${BOTSYNC:-$here/../target/release/botsync}")
RUNS=${RUNS:-20}
INITIAL_MAX=${INITIAL_MAX:-1000000}
DATA=${DATA:-/var/tmp/botsync-scale}
GEN="python3 $here/scale_gen.py"
PA=47610 PB=47611
[ $# -gt 0 ] && sizes=("$@") || sizes=(10000 100000 1000000)
[ -x "$BOTSYNC" ] || { echo "no binary at $BOTSYNC (set BOTSYNC=)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "needs GNU time at /usr/bin/time" >&2; exit 2; }
[ -e "$DATA" ] && { echo "$DATA exists; remove it or set DATA=" >&2; exit 2; }
pids=()
wipe() { # dirs...: rm -rf, the note directories 8 at a time (a serial rm of 10^6 files takes ages)
    find "$@" -mindepth 3 -maxdepth 3 -type d -print0 2>/dev/null | xargs -0 -r -n 8 -P 8 rm -rf || true
    rm -rf "$@"
}
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    wipe "$DATA/a" "$DATA/b" "$DATA"
}
trap cleanup EXIT
mkdir -p "$DATA"
table="$DATA/table.md"

bs() { "$BOTSYNC" "$@"; }
now() { date +%s.%N; }
ms() { python3 -c "import sys; print('%.0f' % ((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$1" "$2"; }
mib() { echo $(( $1 / 1048576 )); }
res() { echo "[$n] $*"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
timed() { # out-file botsync-args... : GNU time's "seconds KiB" into out-file, stdout in .out
    /usr/bin/time -f '%e %M' -o "$1" "$BOTSYNC" "${@:2}" >"$1.out"
}
in_memory() { # ws: the daemon's daemon.index_in_memory from `status --json`
    bs -w "$1" --json status | python3 -c "import json, sys; print(json.load(sys.stdin)['daemon']['index_in_memory'])"
}
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
wait_quiet() { # pids...: until each used < 3 ticks of CPU in 3 checks 2 s apart (30 min cap);
    local -A last busy; local p cur quiet=0 i=0 t   # busy[pid]: the end of its last busy check
    for p in "$@"; do last[$p]=$(cpu_ticks "$p"); busy[$p]=$(now); done
    while [ $quiet -lt 3 ]; do
        sleep 2; i=$((i + 1)); quiet=$((quiet + 1)); t=$(now)
        [ $i -gt 900 ] && { res "WARNING: $* still busy after 30 min" >&2; break; }
        for p in "$@"; do
            cur=$(cpu_ticks "$p")
            [ $((cur - last[$p])) -ge 3 ] && { quiet=0; busy[$p]=$t; }
            last[$p]=$cur
        done
    done
    busy_at=(); for p in "$@"; do busy_at+=("${busy[$p]}"); done
}
serve() { # ws port log: start a daemon, wait for its listening line; sets spid, sms
    local t0
    t0=$(now)
    "$BOTSYNC" -v -w "$1" serve --listen "127.0.0.1:$2" >"$3.out" 2>"$3" &
    spid=$!; pids+=("$spid")
    until grep -q listening "$3.out" 2>/dev/null; do
        kill -0 "$spid" 2>/dev/null || { echo "daemon $1 died:" >&2; cat "$3" >&2; exit 1; }
        sleep 0.1
    done
    sms=$(ms "$t0" "$(now)")
}
sync_json() { # label: time `sync b` once, report its counts
    local t0 t1
    t0=$(now); bs -w a sync b --json >"$DATA/sync.json"; t1=$(now)
    local counts
    counts=$(python3 -c "
import json, sys
p = json.load(open(sys.argv[1]))['peers'][0]
print('reported %d in, %d out, %d B sent, in_sync=%s' % (len(p.get('pulled') or []),
      len(p.get('pushed') or []), p.get('bytes_sent', 0), p.get('in_sync')))" "$DATA/sync.json")
    res "$1: $(ms "$t0" "$t1") ms ($counts)" >&2
    ms "$t0" "$t1"
}

echo "| files | first scan s (RSS MiB) | warm rescan s (RSS MiB) | db MiB after scan (B/file) | .botsync at rest MiB (B/file) | no-op ms median (min-max) | 10-file edit→sync ms | scan + sync ms | daemon a RSS rest / peak MiB | daemon b RSS rest / peak MiB | initial sync s |" >"$table"
echo "|---|---|---|---|---|---|---|---|---|---|---|" >>"$table"
echo "binary $BOTSYNC ($("$BOTSYNC" --version)); $(nproc) cores; $(date -u '+%F %T UTC')"
for n in "${sizes[@]}"; do
    cd "$DATA" && wipe a b
    res "load at start: $(load)"
    t0=$(now); $GEN gen a "$n"; res "generated a in $(ms "$t0" "$(now)") ms"
    initial=yes
    if [ "$n" -gt "$INITIAL_MAX" ]; then
        initial=no; t0=$(now); mkdir b; cp -al a/memory b/   # hard links: 10^6 more inodes cost minutes
        res "b made of hard links to a's notes in $(ms "$t0" "$(now)") ms"
    else mkdir b; fi
    bs -w a init --name a >/dev/null && bs -w b init --name b >/dev/null
    if [ "${KEEP_VERSIONS:-1}" = 0 ]; then for w in a b; do   # no local versions in the store
        python3 -c "import json, sys; p = sys.argv[1]; c = json.load(open(p)); c['local_versions'] = {'max_bytes': 0}; json.dump(c, open(p, 'w'))" $w/.botsync/config.json
    done; res "local_versions off (max_bytes 0) in a and b"; fi
    bs -w a add b "127.0.0.1:$PB" --id "$(bs -w b id)" >/dev/null
    bs -w b add a "127.0.0.1:$PA" --id "$(bs -w a id)" >/dev/null
    sync -f "$DATA"; sleep 4   # older than the scan's racy window
    timed first.t -w a scan; read -r s1 r1 <first.t
    res "first scan: $s1 s, peak RSS $((r1 / 1024)) MiB; $(head -2 first.t.out | tail -1 | sed 's/^ *//')"
    timed warm.t -w a scan; read -r s2 r2 <warm.t
    res "warm rescan: $s2 s, peak RSS $((r2 / 1024)) MiB; $(head -2 warm.t.out | tail -1 | sed 's/^ *//')"
    db1=$(du -sb a/.botsync/db | cut -f1)
    res "index after the first scan: db $(mib "$db1") MiB ($((db1 / n)) B/file), .botsync $(mib "$(du -sb a/.botsync | cut -f1)") MiB"
    if [ $initial = no ]; then
        timed b.t -w b scan; read -r sb rb <b.t; res "first scan of b: $sb s, peak RSS $((rb / 1024)) MiB"
    fi
    serve a $PA "$DATA/a.log"; pa=$spid sa=$sms
    serve b $PB "$DATA/b.log"; pb=$spid sb_=$sms
    res "daemons listening after $sa ms (a), $sb_ ms (b)"
    t0=$(now); wait_quiet "$pa" "$pb"; qa=$(ms "$t0" "${busy_at[0]}") qb=$(ms "$t0" "${busy_at[1]}")
    res "daemons busy after start (start-up rescan, keeping deferred versions) for ~$qa ms (a), ~$qb ms (b); RSS a $(($(status_kib "$pa" VmRSS) / 1024)) MiB, b $(($(status_kib "$pb" VmRSS) / 1024)) MiB"
    if [ $initial = yes ]; then
        init_ms=$(sync_json "initial sync (b empty)"); init_s=$(python3 -c "print(round($init_ms / 1000, 1))")
    else
        init_s="n/a (settle: $(sync_json "settling sync (b generated identical, scanned alone)") ms)"
    fi
    sync_json "second sync" >/dev/null
    wait_quiet "$pa" "$pb"
    read -r fmed fmin fmax < <($GEN time "$RUNS" "$BOTSYNC" --version)
    res "floor, botsync --version x$RUNS: median $fmed ms (min $fmin, max $fmax)"
    read -r nmed nmin nmax < <($GEN time "$RUNS" "$BOTSYNC" -w a sync b)
    res "no-op sync through the daemon x$RUNS: median $nmed ms (min $nmin, max $nmax)"
    $GEN edit a "$n" 1
    e1=$(sync_json "10 notes edited, sync b at once (the daemon's refresh included)")
    $GEN edit a "$n" 2
    t0=$(now); bs -w a scan >/dev/null; sc=$(ms "$t0" "$(now)")
    e2=$(sync_json "10 more edited; after a scan through the daemon ($sc ms), sync b")
    t0=$(now)
    if diff -r --exclude=.botsync a b >/dev/null; then res "diff -r a b: identical, $(find b/memory -type f | wc -l) notes in b ($(ms "$t0" "$(now)") ms)"
    else res "diff -r a b: DIFFERENT"; diff -rq --exclude=.botsync a b | head -5; fi
    sleep 15
    ra=$(status_kib "$pa" VmRSS) ha=$(status_kib "$pa" VmHWM) rb_=$(status_kib "$pb" VmRSS) hb=$(status_kib "$pb" VmHWM)
    res "daemons 15 s after the last sync: a VmRSS $((ra / 1024)) MiB, VmHWM $((ha / 1024)) MiB; b: VmRSS $((rb_ / 1024)) MiB, VmHWM $((hb / 1024)) MiB"
    t0=$(now); i=0
    until [ "$(in_memory a)" = False ] && [ "$(in_memory b)" = False ]; do
        i=$((i + 1)); [ $i -gt 300 ] && { res "WARNING: an index still in memory after 300 s"; break; }
        sleep 1
    done
    sleep 1
    ra=$(status_kib "$pa" VmRSS) rb_=$(status_kib "$pb" VmRSS)
    res "at rest (both indexes out of memory after $(ms "$t0" "$(now)") ms more): a VmRSS $((ra / 1024)) MiB, b VmRSS $((rb_ / 1024)) MiB"
    read -r umed umin umax < <($GEN time "$RUNS" "$BOTSYNC" -w a sync b)
    res "no-op sync at rest x$RUNS: median $umed ms (min $umin, max $umax); index in memory after: a $(in_memory a), b $(in_memory b); VmRSS a $(($(status_kib "$pa" VmRSS) / 1024)) MiB, b $(($(status_kib "$pb" VmRSS) / 1024)) MiB"
    tot=$(du -sb a/.botsync | cut -f1) db=$(du -sb a/.botsync/db | cut -f1) st=$(du -sb a/.botsync/store | cut -f1)
    res "a/.botsync at rest: $(mib "$tot") MiB ($((tot / n)) B/file): db $(mib "$db") MiB ($((db / n)) B/file), store $(mib "$st") MiB, $(find a/.botsync/store -type f | wc -l) store files; b/.botsync $(mib "$(du -sb b/.botsync | cut -f1)") MiB"
    res "what is in .botsync: a: $(cd a/.botsync && du -sb -- * | awk '$1 > 65536 { printf "%s %d MiB, ", $2, $1 / 1048576 }')b: $(cd b/.botsync && du -sb -- * | awk '$1 > 65536 { printf "%s %d MiB, ", $2, $1 / 1048576 }')"
    grep -hiE ' (WARN|ERROR) ' "$DATA/a.log" "$DATA/b.log" | sed 's/^/  daemon log: /' | head -10 || true
    kill "$pa" "$pb"; wait "$pa" "$pb" 2>/dev/null || true; pids=()
    [ -n "${LOGS:-}" ] && mkdir -p "$LOGS" && cp "$DATA/a.log" "$LOGS/a-$n.log" && cp "$DATA/b.log" "$LOGS/b-$n.log"
    res "load at end: $(load)"
    echo "| $n | $s1 ($((r1 / 1024))) | $s2 ($((r2 / 1024))) | $(mib "$db1") ($((db1 / n))) | $(mib "$tot") ($((tot / n))) | $nmed ($nmin-$nmax; floor $fmed) | $e1 | $sc + $e2 | $((ra / 1024)) / $((ha / 1024)) | $((rb_ / 1024)) / $((hb / 1024)) | $init_s |" >>"$table"
    cd "$DATA" && wipe a b
done
echo
cat "$table"
