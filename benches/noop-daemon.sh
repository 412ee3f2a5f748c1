#!/usr/bin/env bash
# The no-op sync through a running daemon (issue 9's fast path), against the same sync from a
# cold process. Two workspaces of 300 notes on 127.0.0.1, both daemons running; prints the median,
# min and max wall time of N `botsync sync` runs that find nothing to do.
# Usage: benches/noop-daemon.sh [N]   (builds the release binary first)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30}
cargo build --release -p botsync --quiet
B=$PWD/target/release/botsync
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$tmp"' EXIT
cd "$tmp"
"$B" -w a init --name a >/dev/null
"$B" -w b init --name b >/dev/null
mkdir -p a/memory
for i in $(seq 1 300); do head -c 3000 /dev/urandom | base64 >"a/memory/n$i.md"; done
"$B" -w b serve --listen 127.0.0.1:0 >b.out 2>b.log &
"$B" -w a serve --listen 127.0.0.1:0 >a.out 2>a.log &
sleep 1
bport=$(sed -n 's/.*:\([0-9]*\) as .*/\1/p' b.out)
aport=$(sed -n 's/.*:\([0-9]*\) as .*/\1/p' a.out)
"$B" -w a add b "127.0.0.1:$bport" --id "$("$B" -w b id)" >/dev/null
"$B" -w b add a "127.0.0.1:$aport" --id "$("$B" -w a id)" >/dev/null
"$B" -w a sync >/dev/null
python3 - "$B" "$n" <<'PY'
import statistics, subprocess, sys, time
b, n = sys.argv[1], int(sys.argv[2])
xs = []
for _ in range(n):
    s = time.perf_counter()
    subprocess.run([b, "-w", "a", "sync"], check=True, stdout=subprocess.DEVNULL)
    xs.append(time.perf_counter() - s)
print(f"no-op sync through the daemon: median {statistics.median(xs)*1000:.1f} ms, "
      f"min {min(xs)*1000:.1f} ms, max {max(xs)*1000:.1f} ms over {n} runs")
PY
kill %2
wait %2 2>/dev/null || true
python3 - "$B" "$n" <<'PY'
import statistics, subprocess, sys, time
b, n = sys.argv[1], int(sys.argv[2])
xs = []
for _ in range(n):
    s = time.perf_counter()
    subprocess.run([b, "-w", "a", "sync"], check=True, stdout=subprocess.DEVNULL)
    xs.append(time.perf_counter() - s)
print(f"no-op sync from a cold process (peer's daemon running): median {statistics.median(xs)*1000:.1f} ms, "
      f"min {min(xs)*1000:.1f} ms, max {max(xs)*1000:.1f} ms over {n} runs")
PY
