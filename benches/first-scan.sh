#!/usr/bin/env bash
# What keeping local versions costs the first scan of a workspace (issue 11): 20,000 files of
# 4 KiB random bytes in 100 directories, `botsync init`, then the first `botsync status` (which
# scans and, with the default `local_versions`, copies every version into the store), against
# the same with `"local_versions": {"max_bytes": 0}`. Each run gets a fresh copy that is never
# deleted before the next run: ext4 slows inode allocation right after mass deletions
# (`recently_deleted` in ext4_create), which would charge one run for another's clean-up.
# Usage: benches/first-scan.sh [BOTSYNC_BIN] [DIR] [REPS]
set -euo pipefail
BIN=${1:-target/release/botsync}
BIN=$(realpath "$BIN")
BASE=${2:-/var/tmp/botsync-first-scan}
REPS=${3:-3}
rm -rf "$BASE"
mkdir -p "$BASE/src"
python3 - "$BASE/src" <<'PY'
import os, sys
root = sys.argv[1]
for d in range(100):
    p = os.path.join(root, "memory/small/d%02d" % d)
    os.makedirs(p)
    for f in range(200):
        with open(os.path.join(p, "f%03d.bin" % f), "wb") as fh:
            fh.write(os.urandom(4096))
PY
sync -f "$BASE"
sleep 5
for rep in $(seq "$REPS"); do
    for mode in kept off; do
        w="$BASE/run-$rep-$mode"
        cp -a "$BASE/src" "$w"
        (cd "$w" && "$BIN" init >/dev/null)
        if [ "$mode" = off ]; then
            python3 - "$w/.botsync/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["local_versions"] = {"max_bytes": 0}
json.dump(c, open(p, "w"))
PY
        fi
        sync -f "$w"
        sleep 5
        (cd "$w" && /usr/bin/time -f "%e %U %S %M" -o "$BASE/time" "$BIN" status --json >/dev/null)
        read -r wall user sys rss <"$BASE/time"
        files=$(find "$w/.botsync/store" -type f | wc -l)
        echo "rep $rep $mode: first scan ${wall} s (user ${user} s, sys ${sys} s), peak RSS $((rss / 1024)) MiB, $files files in the store"
    done
done
rm -rf "$BASE"
