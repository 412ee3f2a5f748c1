"""Wall time and peak memory of processes, and the statistics over runs.

This module owns *how a command is timed*: a monotonic clock around the
process; its peak resident set and CPU time from GNU time
(``/usr/bin/time -f "%M %U %S"``: the peak is the maximum over the process and
the children it waited for, not their sum; CPU is user + system, children
included); the peak of a long-running daemon from ``VmHWM`` in
``/proc/PID/status`` (reset before a run by writing ``5`` to
``/proc/PID/clear_refs``) and its CPU time from ``/proc/PID/stat``. CPU
seconds matter on a shared machine: unlike wall time they hardly grow when
other processes compete for the cores. It also
owns the readiness probe for daemons (a bound UDP/TCP port in ``/proc/net``).

It does not own what is run (see ``rsync_tool.py``, ``botsync_tool.py``) or
the bytes on the wire (``wire.py``).
"""

from __future__ import annotations

import os
import shlex
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = "/usr/bin/time"

#: GNU time's output format: peak RSS (KiB), user and system CPU seconds.
TIME_FORMAT = "%M %U %S"

#: A command that runs longer than this is killed and counted as failed.
TIMEOUT_S = 900.0


@dataclass
class Timed:
    """One finished command: wall seconds, peak RSS (KiB), CPU seconds and its output."""

    cmd: list[str]
    wall_s: float
    rss_kib: int | None
    returncode: int
    stdout: str
    stderr: str
    cpu_s: float | None = None

    def check(self, what: str) -> Timed:
        """Raise ``CommandFailed`` unless the command exited 0."""
        if self.returncode != 0:
            raise CommandFailed(what, self)
        return self


class CommandFailed(RuntimeError):
    """A measured or preparatory command exited non-zero."""

    def __init__(self, what: str, timed: Timed) -> None:
        tail = " | ".join(timed.stderr.strip().splitlines()[-3:])
        super().__init__(f"{what} failed (exit {timed.returncode}): {shlex.join(timed.cmd)}: {tail}")
        self.timed = timed


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = TIMEOUT_S) -> Timed:
    """Run ``cmd`` under GNU time; the wall clock covers only the child process."""
    with tempfile.NamedTemporaryFile("r", prefix="botsync-bench-rss-", suffix=".txt") as rss:
        full = [GNU_TIME, "-f", TIME_FORMAT, "-o", rss.name, *cmd]
        start = time.perf_counter()
        code, out, err = _bounded(full, env, cwd, timeout_s)
        wall = time.perf_counter() - start
        rss_kib, cpu_s = read_time_file(Path(rss.name))
        return Timed(cmd, wall, rss_kib, code, out, err, cpu_s)


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = TIMEOUT_S) -> Timed:
    """Run a preparatory (unmeasured) command; same result type, no RSS."""
    start = time.perf_counter()
    code, out, err = _bounded(cmd, env, cwd, timeout_s)
    return Timed(cmd, time.perf_counter() - start, None, code, out, err)


def _bounded(cmd: list[str], env: dict[str, str] | None, cwd: Path | None, timeout_s: float) -> tuple[int, str, str]:
    """Run ``cmd`` in its own process group; kill that group if it outlives ``timeout_s``.

    The group matters: killing only GNU time would leave the tool it wraps running.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return -signal.SIGKILL, out, err + f"\ntimed out after {timeout_s:.0f} s and was killed"


def read_time_file(path: Path) -> tuple[int | None, float | None]:
    """(peak RSS KiB, user + system CPU seconds) from a file GNU time wrote with ``TIME_FORMAT``.

    GNU time puts "Command exited with non-zero status N" before its figures
    when the command fails, so only the last line is read.
    """
    try:
        lines = path.read_text().strip().splitlines()
    except OSError:
        return None, None
    fields = lines[-1].split() if lines else []
    try:
        rss = int(fields[0])
        cpu = float(fields[1]) + float(fields[2])
    except (IndexError, ValueError):
        return None, None
    return rss, round(cpu, 3)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds a live process has used so far (``/proc/PID/stat``)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces: split after its closing bracket.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def vm_hwm_kib(pid: int) -> int | None:
    """Peak resident set (``VmHWM``) of a live process, in KiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_hwm(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux >= 4.0); False if not possible."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def port_bound(proto: str, port: int) -> bool:
    """Whether some socket is bound to local ``port`` (``proto`` tcp or udp)."""
    want = f":{port:04X}"
    for table in (f"/proc/net/{proto}", f"/proc/net/{proto}6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 1 and fields[1].endswith(want):
                        return True
        except OSError:
            continue
    return False


class Daemon:
    """A background process with a pid file under ``run_dir`` (teardown.sh stops leftovers)."""

    def __init__(self, name: str, cmd: list[str], run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = cmd
        self.run_dir = run_dir
        self.env = env
        self.proc: subprocess.Popen | None = None

    @property
    def pid_file(self) -> Path:
        """Where the pid is recorded while the daemon runs."""
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        """stdout and stderr of the daemon."""
        return self.run_dir / f"{self.name}.log"

    def alive(self) -> bool:
        """Whether the process is running."""
        return self.proc is not None and self.proc.poll() is None

    def start(self, ready: tuple[str, int], timeout_s: float = 30.0) -> None:
        """Start and wait until ``ready`` = (proto, port) is bound."""
        self.stop()
        if port_bound(*ready):
            raise RuntimeError(f"cannot start {self.name}: {ready[0]} port {ready[1]} is already in use; pick another in botsync.json")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.pid_file.write_text(str(self.proc.pid))
        deadline = time.monotonic() + timeout_s
        while not port_bound(*ready):
            if not self.alive():
                raise RuntimeError(
                    f"{self.name} exited (code {self.proc.returncode}) before binding {ready[0]} port {ready[1]}: see {self.log_file}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not bind {ready[0]} port {ready[1]} within {timeout_s:.0f} s: see {self.log_file}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        self.pid_file.unlink(missing_ok=True)

    @property
    def pid(self) -> int | None:
        """The live process id, if any."""
        return self.proc.pid if self.alive() and self.proc else None


def flush(path: Path) -> None:
    """Write back dirty pages of the file system holding ``path`` (``sync -f``)."""
    subprocess.run(["sync", "-f", str(path)], check=False)


def median(values: list[float]) -> float | None:
    """Median of the non-None values, or None."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def peak(values: list[int | None]) -> int | None:
    """Maximum of the non-None values, or None."""
    present = [v for v in values if v is not None]
    return max(present) if present else None


def environ(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The current environment plus ``extra`` (for templated commands)."""
    env = dict(os.environ)
    env.update(extra or {})
    return env
