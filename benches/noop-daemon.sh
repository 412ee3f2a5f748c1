#!/usr/bin/env bash
# The no-op sync of an agent workspace (PRODUCT.md §7, issue 9's fast path), measured side by side
# in one run: botsync through its running daemon, botsync from a cold process, rsync -a --delete
# over SSH (a private sshd on 127.0.0.1), and Unison local-to-local. Two workspaces of 300 notes,
# already in sync; N runs each; prints median/min/max and the ratios of the medians.
# Usage: benches/noop-daemon.sh [N]
# Builds the release binary; installs rsync, openssh-server and unison with apt-get when missing
# (needs root for that); starts and stops its own sshd; leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-30}
missing=()
command -v rsync >/dev/null || missing+=(rsync)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v unison >/dev/null || missing+=(unison)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
cargo build --release -p botsync --quiet
B=$PWD/target/release/botsync
tmp=$(mktemp -d /var/tmp/botsync-noop-XXXXXX)
sshd_pid=
cleanup() {
    kill $(jobs -p) 2>/dev/null || true
    [ -n "$sshd_pid" ] && kill "$sshd_pid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
cd "$tmp"

# The workspaces: botsync's a and b; rsync's and Unison's copies of the same files.
"$B" -w a init --name a >/dev/null
"$B" -w b init --name b >/dev/null
mkdir -p a/memory
for i in $(seq 1 300); do head -c 3000 /dev/urandom | base64 >"a/memory/n$i.md"; done
mkdir -p rsync-dst unison-a unison-b
cp -a a/memory unison-a/

# A private sshd for rsync.
mkdir -p ssh && chmod 700 ssh
ssh-keygen -q -t ed25519 -N '' -f ssh/host -C noop-host
ssh-keygen -q -t ed25519 -N '' -f ssh/client -C noop-client
cp ssh/client.pub ssh/authorized_keys && chmod 600 ssh/authorized_keys
cat >ssh/sshd_config <<CFG
Port 2223
ListenAddress 127.0.0.1
HostKey $tmp/ssh/host
PidFile $tmp/ssh/sshd.pid
AuthorizedKeysFile $tmp/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
StrictModes no
LogLevel ERROR
CFG
mkdir -p /run/sshd
/usr/sbin/sshd -f "$tmp/ssh/sshd_config"
sleep 0.5
sshd_pid=$(cat ssh/sshd.pid)
RSH="ssh -p 2223 -i $tmp/ssh/client -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR"
rsync -a --delete -e "$RSH" a/memory/ "$(id -un)@127.0.0.1:$tmp/rsync-dst/"
export UNISON=$tmp/unison-state
unison unison-a unison-b -batch -auto -silent >/dev/null 2>&1

# botsync's daemons.
"$B" -w b serve --listen 127.0.0.1:0 >b.out 2>b.log &
"$B" -w a serve --listen 127.0.0.1:0 >a.out 2>a.log &
a_pid=$!
sleep 1
bport=$(sed -n 's/.*:\([0-9]*\) as .*/\1/p' b.out)
aport=$(sed -n 's/.*:\([0-9]*\) as .*/\1/p' a.out)
"$B" -w a add b "127.0.0.1:$bport" --id "$("$B" -w b id)" >/dev/null
"$B" -w b add a "127.0.0.1:$aport" --id "$("$B" -w a id)" >/dev/null
"$B" -w a sync >/dev/null

time_runs() { # label, command...
    python3 - "$n" "$@" <<'PY'
import json, statistics, subprocess, sys, time
n, label, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
xs = []
for _ in range(n):
    s = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    xs.append(time.perf_counter() - s)
print(json.dumps({"case": label, "median": statistics.median(xs), "min": min(xs), "max": max(xs)}))
PY
}
{
    time_runs "botsync through its daemon" "$B" -w a sync
    time_runs "rsync -a --delete over SSH" rsync -a --delete -e "$RSH" a/memory/ "$(id -un)@127.0.0.1:$tmp/rsync-dst/"
    time_runs "Unison, local to local" unison unison-a unison-b -batch -auto -silent
    kill "$a_pid"; wait "$a_pid" 2>/dev/null || true
    time_runs "botsync from a cold process" "$B" -w a sync
} >results.jsonl
python3 - "$n" <<'PY'
import json, sys
rows = [json.loads(l) for l in open("results.jsonl")]
by = {r["case"]: r for r in rows}
rsync = by["rsync -a --delete over SSH"]["median"]
unison = by["Unison, local to local"]["median"]
print(f"no-op sync, 300 notes, {sys.argv[1]} runs each (wall time including process start)")
print(f"{'case':<34} {'median':>9} {'min':>9} {'max':>9} {'x rsync':>8} {'x Unison':>9}")
for r in rows:
    print(f"{r['case']:<34} {r['median']*1000:>7.1f}ms {r['min']*1000:>7.1f}ms {r['max']*1000:>7.1f}ms "
          f"{r['median']/rsync:>8.3f} {r['median']/unison:>9.3f}")
PY
