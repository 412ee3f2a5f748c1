#!/usr/bin/env bash
# Prepare the machine for the end-to-end benchmark. Idempotent: run it again
# and it only does what is missing.
#
#   1. installs rsync, Unison, the OpenSSH server and client, GNU time and nftables;
#   2. creates a 4 GiB ext4 image (journaled) and loop-mounts it, because the
#      root file system here has no journal and small-file timings on it swing
#      with recent deletes (PRODUCT.md section 7);
#   3. starts a private sshd on 127.0.0.1:2222 with its own host key and its
#      own authorized key; the system's sshd configuration is not touched.
#
# Everything lives under $BENCH_ROOT (default /var/tmp/botsync-bench).
# teardown.sh undoes steps 2 and 3. Needs root (mount, sshd, nft).
set -euo pipefail

BENCH_ROOT=${BENCH_ROOT:-/var/tmp/botsync-bench}
SSH_PORT=${SSH_PORT:-2222}
IMAGE_SIZE=${IMAGE_SIZE:-4G}
IMAGE=$BENCH_ROOT/fs.img
MNT=$BENCH_ROOT/mnt
SSHDIR=$BENCH_ROOT/ssh

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (loop mount, sshd, nftables): run it with sudo"

# 1. Packages ---------------------------------------------------------------
missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v unison >/dev/null || missing+=(unison)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
[ -x /usr/bin/time ] || missing+=(time)
command -v nft >/dev/null || missing+=(nftables)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. Journaled ext4 on a loop device ----------------------------------------
mkdir -p "$BENCH_ROOT" "$MNT"
if mountpoint -q "$MNT"; then
    say "$MNT already mounted"
else
    if [ ! -f "$IMAGE" ]; then
        say "creating $IMAGE_SIZE ext4 image $IMAGE"
        truncate -s "$IMAGE_SIZE" "$IMAGE"
        mkfs.ext4 -q -F -L botsync-bench "$IMAGE"
    fi
    mount -o loop "$IMAGE" "$MNT" || die "cannot loop-mount $IMAGE on $MNT (is /dev/loop* available?)"
    say "mounted $IMAGE on $MNT"
fi
dumpe2fs -h "$(findmnt -n -o SOURCE "$MNT")" 2>/dev/null | grep -q has_journal \
    || die "$MNT has no journal: recreate the image (rm $IMAGE) and run setup again"

# 3. Private sshd -----------------------------------------------------------
mkdir -p "$SSHDIR"
chmod 700 "$SSHDIR"
[ -f "$SSHDIR/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C botsync-bench-host -f "$SSHDIR/host_ed25519"
[ -f "$SSHDIR/client_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C botsync-bench-client -f "$SSHDIR/client_ed25519"
cp "$SSHDIR/client_ed25519.pub" "$SSHDIR/authorized_keys"
chmod 600 "$SSHDIR/authorized_keys"

cat >"$SSHDIR/sshd_config" <<EOF
# Private sshd for the botsync benchmark; see benches/e2e/setup.sh.
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSHDIR/host_ed25519
PidFile $SSHDIR/sshd.pid
AuthorizedKeysFile $SSHDIR/authorized_keys
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
UseDNS no
StrictModes no
X11Forwarding no
PrintMotd no
MaxStartups 100
LogLevel ERROR
EOF

cat >"$SSHDIR/ssh_config" <<EOF
Host botsync-bench
    HostName 127.0.0.1
    Port $SSH_PORT
    User $(id -un)
    IdentityFile $SSHDIR/client_ed25519
    IdentitiesOnly yes
    UserKnownHostsFile $SSHDIR/known_hosts
    StrictHostKeyChecking no
    BatchMode yes
    LogLevel ERROR
EOF

sshd_running() {
    [ -f "$SSHDIR/sshd.pid" ] && kill -0 "$(cat "$SSHDIR/sshd.pid")" 2>/dev/null
}
if sshd_running; then
    say "sshd already running (pid $(cat "$SSHDIR/sshd.pid"))"
else
    mkdir -p /run/sshd   # privilege separation directory OpenSSH requires
    /usr/sbin/sshd -t -f "$SSHDIR/sshd_config" || die "sshd rejected $SSHDIR/sshd_config"
    # Without -D sshd daemonizes and writes PidFile itself.
    /usr/sbin/sshd -f "$SSHDIR/sshd_config" -E "$SSHDIR/sshd.log"
    for _ in $(seq 50); do sshd_running && break; sleep 0.1; done
    sshd_running || die "sshd did not start: see $SSHDIR/sshd.log"
    say "sshd listening on 127.0.0.1:$SSH_PORT (pid $(cat "$SSHDIR/sshd.pid"))"
fi

ssh -F "$SSHDIR/ssh_config" botsync-bench true \
    || die "cannot log in over ssh to 127.0.0.1:$SSH_PORT: see $SSHDIR/sshd.log"
say "ready: mount $MNT, ssh -F $SSHDIR/ssh_config botsync-bench"
