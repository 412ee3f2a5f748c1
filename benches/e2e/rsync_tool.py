"""The rsync-over-SSH side of the benchmark: ``rsync -a --delete`` to the private sshd.

This module owns the rsync command line, the server-side memory probe (the
remote rsync is wrapped in GNU time through ``--rsync-path``) and the parsing
of ``--stats``. It does not own the sshd (``setup.sh``), the counters
(``wire.py``) or the order of runs (``run.py``).

The command measured is, with the paths of one dataset::

    rsync -a --delete --stats --exclude=/.botsync/ \\
      -e 'ssh -p 2222 -i KEY -o IdentitiesOnly=yes -o UserKnownHostsFile=... \\
          -o StrictHostKeyChecking=no -o BatchMode=yes -o LogLevel=ERROR' \\
      --rsync-path='/usr/bin/time -f "%M %U %S" -o TIMEFILE rsync' \\
      SRC/ root@127.0.0.1:DST/

``--exclude=/.botsync/`` keeps botsync's private state (present in the shared
source workspace) out of rsync's transfer; everything else is plain
``rsync -a --delete``, as in the PRODUCT.md section 7 anchors.
"""

from __future__ import annotations

import getpass
import re
import shlex
import shutil
from pathlib import Path
from typing import ClassVar

from measure import GNU_TIME, TIME_FORMAT, Timed, read_time_file, run, timed
from results import Run
from wire import Port, WireCounter

#: The port counters label for SSH traffic.
LABEL = "ssh"


class RsyncTool:
    """Pushes a dataset with ``rsync -a --delete`` over SSH and measures it."""

    name = "rsync"
    variants: ClassVar[list[str]] = ["rsync"]

    def __init__(self, bench_root: Path, src_root: Path, dst_root: Path, counter: WireCounter, ssh_port: int = 2222) -> None:
        self.bench_root = bench_root
        self.src_root = src_root
        self.dst_root = dst_root
        self.counter = counter
        self.ssh_port = ssh_port
        self.key = bench_root / "ssh" / "client_ed25519"
        self.known_hosts = bench_root / "ssh" / "known_hosts"
        self.server_time = bench_root / "run" / "rsync-server-time.txt"
        # The server's GNU time writes here; on a fresh machine nothing else has made it yet.
        self.server_time.parent.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()

    @staticmethod
    def port(ssh_port: int = 2222) -> Port:
        """The counter this tool's traffic is read from."""
        return Port(LABEL, "tcp", ssh_port)

    def available(self) -> tuple[bool, str]:
        """Whether rsync, ssh and the client key are present."""
        for tool in ("rsync", "ssh"):
            if not shutil.which(tool):
                return False, f"{tool} not installed: run benches/e2e/setup.sh"
        if not self.key.exists():
            return False, f"no client key {self.key}: run benches/e2e/setup.sh"
        return True, ""

    def ssh_command(self) -> list[str]:
        """The ``ssh`` invocation rsync uses as its remote shell."""
        return [
            "ssh", "-p", str(self.ssh_port), "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=no",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def command(self, dataset: str) -> list[str]:
        """The full measured rsync command line for ``dataset``."""
        src = self.src_root / dataset
        dst = self.dst(dataset)
        return [
            "rsync", "-a", "--delete", "--stats", "--exclude=/.botsync/",
            "-e", shlex.join(self.ssh_command()),
            f"--rsync-path={GNU_TIME} -f {shlex.quote(TIME_FORMAT)} -o {self.server_time} rsync",
            f"{src}/", f"{self.user}@127.0.0.1:{dst}/",
        ]  # fmt: skip

    def dst(self, dataset: str) -> Path:
        """Where this tool's copy of ``dataset`` lives."""
        return self.dst_root / "rsync" / dataset

    def reset(self, dataset: str) -> None:
        """Remove the destination so the next sync is an initial one."""
        dst = self.dst(dataset)
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)

    def prepare(self, dataset: str) -> None:
        """Bring the destination in sync with the source, unmeasured."""
        self.dst(dataset).mkdir(parents=True, exist_ok=True)
        run(self.command(dataset)).check(f"rsync of {dataset}")

    def sync(self, dataset: str, variant: str) -> Run:
        """One measured push of ``dataset``."""
        self.server_time.parent.mkdir(parents=True, exist_ok=True)
        self.server_time.unlink(missing_ok=True)
        before = self.counter.snapshot()
        result: Timed = timed(self.command(dataset))
        up, down = self.counter.delta(before, LABEL)
        sent, received = parse_stats(result.stdout)
        server_rss, server_cpu = read_time_file(self.server_time)
        return Run(
            wall_s=result.wall_s,
            wire_up=up,
            wire_down=down,
            payload_up=sent,
            payload_down=received,
            rss_client_kib=result.rss_kib,
            rss_server_kib=server_rss,
            cpu_client_s=result.cpu_s,
            cpu_server_s=server_cpu,
            ok=result.returncode == 0,
            error=None if result.returncode == 0 else result.stderr.strip()[-500:],
        )

    def close(self) -> None:
        """Nothing to stop: sshd belongs to setup.sh."""


_STAT = re.compile(r"^Total bytes (sent|received):\s*([\d,.]+)", re.MULTILINE)


def parse_stats(stdout: str) -> tuple[int | None, int | None]:
    """(sent, received) from ``rsync --stats`` ("1,234" or "1.234" grouping)."""
    found = {kind: int(re.sub(r"[,.]", "", number)) for kind, number in _STAT.findall(stdout)}
    return found.get("sent"), found.get("received")
