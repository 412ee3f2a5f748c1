"""The Unison side of the benchmark: ``unison`` to the same private sshd as rsync.

This module owns the Unison command line, its archives (one pair per dataset,
kept under ``BENCH_ROOT/run/unison``, on both ends) and its server-side memory
probe (the remote ``unison -server`` is wrapped in GNU time through
``-servercmd``). It does not own the sshd (``setup.sh``), the counters
(``wire.py``) or the order of runs (``run.py``).

Unison is a two-way synchroniser; the benchmark pushes, so the source wins every
difference (``-force SRC``), deletions are carried out however many
(``-confirmbigdel=false``), and nothing is asked (``-batch -auto``). The command
measured is, with the paths of one dataset::

    UNISON=ARCHIVES unison SRC ssh://root@127.0.0.1:2222//DST \\
      -batch -auto -force SRC -confirmbigdel=false -ignore 'Path .botsync' \\
      -sshargs '-i KEY -o IdentitiesOnly=yes ...' \\
      -servercmd 'env UNISON=ARCHIVES /usr/bin/time -f "%M %U %S" -o TIMEFILE unison'

Unison remembers what both replicas held in its archives; an ``initial`` run
starts from an empty destination and no archives, like the other tools.
Bytes travel over the SSH port, counted under the same label as rsync's (runs
never overlap).
"""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
from pathlib import Path
from typing import ClassVar

from measure import GNU_TIME, TIME_FORMAT, Timed, read_time_file, run, timed
from results import Run
from rsync_tool import LABEL
from wire import WireCounter


class UnisonTool:
    """Pushes a dataset with Unison over SSH and measures it."""

    name = "unison"
    variants: ClassVar[list[str]] = ["unison"]

    def __init__(self, bench_root: Path, src_root: Path, dst_root: Path, counter: WireCounter, ssh_port: int = 2222) -> None:
        self.bench_root = bench_root
        self.src_root = src_root
        self.dst_root = dst_root
        self.counter = counter
        self.ssh_port = ssh_port
        self.key = bench_root / "ssh" / "client_ed25519"
        self.known_hosts = bench_root / "ssh" / "known_hosts"
        self.server_time = bench_root / "run" / "unison-server-time.txt"
        self.archives = bench_root / "run" / "unison"
        self.user = getpass.getuser()

    def available(self) -> tuple[bool, str]:
        """Whether unison, ssh and the client key are present."""
        for tool in ("unison", "ssh"):
            if not shutil.which(tool):
                return False, f"{tool} not installed: run benches/e2e/setup.sh"
        if not self.key.exists():
            return False, f"no client key {self.key}: run benches/e2e/setup.sh"
        return True, ""

    def ssh_args(self) -> list[str]:
        """The options Unison passes to ``ssh`` (the port is in the root's URL)."""
        return [
            "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "StrictHostKeyChecking=no",
            "-o", "BatchMode=yes",
            "-o", "LogLevel=ERROR",
        ]  # fmt: skip

    def archive_dir(self, side: str, dataset: str) -> Path:
        """Where one end keeps its archive of ``dataset`` (``side``: client or server)."""
        return self.archives / side / dataset

    def command(self, dataset: str) -> list[str]:
        """The full measured unison command line for ``dataset``."""
        src = self.src_root / dataset
        dst = self.dst(dataset)
        server = (
            f"env UNISON={shlex.quote(str(self.archive_dir('server', dataset)))} "
            f"{GNU_TIME} -f {shlex.quote(TIME_FORMAT)} -o {shlex.quote(str(self.server_time))} unison"
        )
        return [
            "unison", str(src), f"ssh://{self.user}@127.0.0.1:{self.ssh_port}/{dst}",
            "-batch", "-auto", "-silent", "-force", str(src), "-confirmbigdel=false",
            "-ignore", "Path .botsync",
            "-sshargs", shlex.join(self.ssh_args()),
            "-servercmd", server,
        ]  # fmt: skip

    def env(self, dataset: str) -> dict[str, str]:
        """The client's archive directory for ``dataset``."""
        return {**os.environ, "UNISON": str(self.archive_dir("client", dataset))}

    def dst(self, dataset: str) -> Path:
        """Where this tool's copy of ``dataset`` lives."""
        return self.dst_root / "unison" / dataset

    def reset(self, dataset: str) -> None:
        """Remove the destination and both archives so the next sync is an initial one."""
        dst = self.dst(dataset)
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        for side in ("client", "server"):
            shutil.rmtree(self.archive_dir(side, dataset), ignore_errors=True)
            self.archive_dir(side, dataset).mkdir(parents=True)

    def prepare(self, dataset: str) -> None:
        """Bring the destination in sync with the source, unmeasured."""
        self.dst(dataset).mkdir(parents=True, exist_ok=True)
        for side in ("client", "server"):
            self.archive_dir(side, dataset).mkdir(parents=True, exist_ok=True)
        self.server_time.parent.mkdir(parents=True, exist_ok=True)
        run(self.command(dataset), env=self.env(dataset)).check(f"unison of {dataset}")

    def sync(self, dataset: str, variant: str) -> Run:
        """One measured push of ``dataset``."""
        self.server_time.parent.mkdir(parents=True, exist_ok=True)
        self.server_time.unlink(missing_ok=True)
        before = self.counter.snapshot()
        result: Timed = timed(self.command(dataset), env=self.env(dataset))
        up, down = self.counter.delta(before, LABEL)
        server_rss, server_cpu = read_time_file(self.server_time)
        return Run(
            wall_s=result.wall_s,
            wire_up=up,
            wire_down=down,
            payload_up=None,
            payload_down=None,
            rss_client_kib=result.rss_kib,
            rss_server_kib=server_rss,
            cpu_client_s=result.cpu_s,
            cpu_server_s=server_cpu,
            ok=result.returncode == 0,
            error=None if result.returncode == 0 else (result.stderr or result.stdout).strip()[-500:],
        )

    def close(self) -> None:
        """Nothing to stop: sshd belongs to setup.sh."""
