"""The botsync side of the benchmark, driven by command templates (``botsync.json``).

This module owns the life cycle of a botsync source/destination pair for one
dataset: initializing both workspaces, pinning each other's ids, enabling
skills in the config, running the destination daemon, and the measured push
in two variants:

* ``botsync-cold``: the destination daemon is (re)started just before the run
  (unmeasured) and the client is a new ``botsync push`` process: both sides
  cold, as rsync's remote side is a fresh process per run.
* ``botsync-daemon``: the destination daemon keeps running between runs; if
  the config names ``src_serve`` and ``daemon_push`` a source daemon runs too
  and the measured command is ``daemon_push`` (which must return when the sync
  is done); otherwise the measured command is the same ``push``. When the
  source daemon has just been (re)started, the optional ``daemon_warm``
  command runs first, unmeasured (botsync: ``check``, a dry-run pull that
  changes nothing), so the run meets a daemon that is up and connected, as a
  daemon that runs all the time is.

Peak memory: the client from GNU time; a daemon from its ``VmHWM`` (reset
before each run in the daemon variant). CPU: the client from GNU time, a
daemon from its ``/proc/PID/stat`` before and after the run. Bytes: the UDP
counter on the destination daemon's port.

It does not own the commands themselves: the CLI does not exist yet, so
every command is a template the lead adapts in ``botsync.json`` without
touching this file. It does not own the order of runs (``run.py``).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from measure import Daemon, cpu_seconds, environ, reset_hwm, run, timed, vm_hwm_kib
from results import Run
from wire import Port, WireCounter

#: The port counters label for botsync traffic.
LABEL = "botsync"


@dataclass
class BotsyncConfig:
    """The contents of ``botsync.json`` with the binary resolved to a path."""

    binary: Path
    build_hint: str
    env: dict[str, str]
    dst_port: int
    src_port: int
    src_name: str
    dst_name: str
    commands: dict[str, str | None]
    id_pattern: str
    config_file: str
    config_set: dict

    @staticmethod
    def load(path: Path, repo_root: Path, binary: str | None = None) -> BotsyncConfig:
        """Read ``path``; a relative binary is relative to ``repo_root``."""
        raw = json.loads(path.read_text())
        exe = Path(binary or raw["binary"])
        if not exe.is_absolute():
            exe = repo_root / exe
        required = {"init", "id", "add_peer", "serve", "push"}
        missing = required - {k for k, v in raw["commands"].items() if v}
        if missing:
            raise ValueError(f"{path}: commands {sorted(missing)} are required")
        return BotsyncConfig(
            binary=exe,
            build_hint=raw.get("build_hint", "cargo build --release -p botsync"),
            env={k: str(v) for k, v in raw.get("env", {}).items()},
            dst_port=int(raw["dst_port"]),
            src_port=int(raw["src_port"]),
            src_name=raw["src_name"],
            dst_name=raw["dst_name"],
            commands=raw["commands"],
            id_pattern=raw["id_pattern"],
            config_file=raw["config_file"],
            config_set=raw["config_set"],
        )

    @property
    def uses_src_daemon(self) -> bool:
        """Whether the daemon variant runs a source daemon and triggers it."""
        return bool(self.commands.get("src_serve") and self.commands.get("daemon_push"))


def enable_skills(ws: Path, config_file: str = ".botsync/config.json", settings: dict | None = None) -> Path:
    """Merge ``settings`` (default ``{"sync_skills": true}``) into the workspace config.

    Keys already in the file are kept unless ``settings`` overrides them; the
    file is created if missing. Adapt the key in ``botsync.json``
    (``config_set``) when the config schema settles.
    """
    path = ws / config_file
    current = json.loads(path.read_text()) if path.exists() else {}
    if not isinstance(current, dict):
        raise TypeError(f"{path}: expected a JSON object, found {type(current).__name__}")
    current.update(settings if settings is not None else {"sync_skills": True})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(current, indent=2) + "\n")
    tmp.replace(path)
    return path


class BotsyncTool:
    """A botsync source/destination pair per dataset, measured in two variants."""

    name = "botsync"
    variants: ClassVar[list[str]] = ["botsync-cold", "botsync-daemon"]

    def __init__(self, cfg: BotsyncConfig, bench_root: Path, src_root: Path, dst_root: Path, counter: WireCounter) -> None:
        self.cfg = cfg
        self.src_root = src_root
        self.dst_root = dst_root
        self.counter = counter
        self.env = environ(cfg.env)
        self.ids: dict[str, str] = {}
        self.ready: set[str] = set()
        self.synced: set[str] = set()
        run_dir = bench_root / "run"
        self.dst_daemon = Daemon("botsync-dst", [], run_dir, self.env)
        self.src_daemon = Daemon("botsync-src", [], run_dir, self.env)

    @staticmethod
    def port(cfg: BotsyncConfig) -> Port:
        """The counter this tool's traffic is read from (the destination daemon's port)."""
        return Port(LABEL, "udp", cfg.dst_port)

    def available(self) -> tuple[bool, str]:
        """Whether the binary exists; the message is what the user should do."""
        if self.cfg.binary.is_file():
            return True, ""
        return False, f"botsync: not built ({self.cfg.build_hint})"

    def dst(self, dataset: str) -> Path:
        """Where this tool's copy of ``dataset`` lives."""
        return self.dst_root / "botsync" / dataset

    def command(self, key: str, side: str, dataset: str) -> list[str] | None:
        """Template ``key`` rendered for ``side`` ("src" or "dst"), or None if unset."""
        template = self.cfg.commands.get(key)
        if not template:
            return None
        src, dst = self.src_root / dataset, self.dst(dataset)
        me, other = ("src", "dst") if side == "src" else ("dst", "src")
        names = {"src": self.cfg.src_name, "dst": self.cfg.dst_name}
        ports = {"src": self.cfg.src_port, "dst": self.cfg.dst_port}
        values = {
            "bin": shlex.quote(str(self.cfg.binary)),
            "src": shlex.quote(str(src)),
            "dst": shlex.quote(str(dst)),
            "ws": shlex.quote(str(src if side == "src" else dst)),
            "name": names[me],
            "port": ports[me],
            "peer": names[other],
            "peer_port": ports[other],
            "peer_id": self.ids.get(other, ""),
        }
        return shlex.split(template.format(**values))

    def reset(self, dataset: str) -> None:
        """Fresh state on both sides: empty destination, new identities, peers pinned.

        The source's ``.botsync/`` is removed too, so an initial sync includes
        the first scan of the source, as it would for a user.
        """
        self.stop()
        self.ready.discard(dataset)
        self.synced.discard(dataset)
        dst = self.dst(dataset)
        if dst.exists():
            shutil.rmtree(dst)
        dst.mkdir(parents=True)
        shutil.rmtree(self.src_root / dataset / ".botsync", ignore_errors=True)
        for side in ("src", "dst"):
            self._run("init", side, dataset)
            done = self._run("id", side, dataset)
            found = re.search(self.cfg.id_pattern, done.stdout.strip())
            if not found:
                raise RuntimeError(f"botsync id ({side}): no id matching {self.cfg.id_pattern!r} in {done.stdout!r}")
            self.ids[side] = found.group(1)
            ws = self.src_root / dataset if side == "src" else dst
            enable_skills(ws, self.cfg.config_file, self.cfg.config_set)
        for side in ("src", "dst"):
            self._run("add_peer", side, dataset)
        self.ready.add(dataset)

    def prepare(self, dataset: str) -> None:
        """Make sure ``dataset`` was synced once (unmeasured) before a repeated case."""
        if dataset in self.synced:
            return
        self.reset(dataset)
        self._start_dst(dataset)
        self._run("push", "src", dataset)
        self.synced.add(dataset)

    def sync(self, dataset: str, variant: str) -> Run:
        """One measured push in ``variant`` ("botsync-cold" or "botsync-daemon")."""
        if dataset not in self.ready:
            self.reset(dataset)
        if variant == "botsync-cold":
            self.src_daemon.stop()
            self._start_dst(dataset)
            cmd = self.command("push", "src", dataset)
        else:
            if not self.dst_daemon.alive():
                self._start_dst(dataset)
            cmd = self.command("push", "src", dataset)
            if self.cfg.uses_src_daemon:
                if not self.src_daemon.alive():
                    self.src_daemon.cmd = self.command("src_serve", "src", dataset) or []
                    self.src_daemon.start(("udp", self.cfg.src_port))
                    self._warm(dataset)
                cmd = self.command("daemon_push", "src", dataset)
            for daemon in (self.dst_daemon, self.src_daemon):
                if daemon.pid:
                    reset_hwm(daemon.pid)
        assert cmd is not None, "push is a required template (checked in BotsyncConfig.load)"
        daemons = {"dst": self.dst_daemon.pid, "src": self.src_daemon.pid if variant == "botsync-daemon" else None}
        cpu_before = {side: cpu_seconds(pid) for side, pid in daemons.items() if pid}
        before = self.counter.snapshot()
        result = timed(cmd, env=self.env)
        up, down = self.counter.delta(before, LABEL)
        cpu_used = {side: _minus(cpu_seconds(pid), cpu_before.get(side)) for side, pid in daemons.items() if pid}
        server = vm_hwm_kib(daemons["dst"]) if daemons["dst"] else None
        client = result.rss_kib
        client_cpu = result.cpu_s
        if daemons["src"]:
            peaks = [k for k in (client, vm_hwm_kib(daemons["src"])) if k is not None]
            client = max(peaks) if peaks else None
            client_cpu = _plus(client_cpu, cpu_used.get("src"))
        if result.returncode == 0:
            self.synced.add(dataset)
        return Run(
            wall_s=result.wall_s,
            wire_up=up,
            wire_down=down,
            payload_up=None,
            payload_down=None,
            rss_client_kib=client,
            rss_server_kib=server,
            cpu_client_s=client_cpu,
            cpu_server_s=cpu_used.get("dst"),
            ok=result.returncode == 0,
            error=None if result.returncode == 0 else result.stderr.strip()[-500:],
        )

    def stop(self) -> None:
        """Stop both daemons."""
        self.src_daemon.stop()
        self.dst_daemon.stop()

    def close(self) -> None:
        """Stop everything this tool started."""
        self.stop()

    def _start_dst(self, dataset: str) -> None:
        self.dst_daemon.cmd = self.command("serve", "dst", dataset) or []
        self.dst_daemon.start(("udp", self.cfg.dst_port))

    def _warm(self, dataset: str) -> None:
        """Run ``daemon_warm`` (unmeasured) against a just started source daemon.

        Exit 0 or 3 (botsync ``check``: something would arrive) both mean the
        daemon answered; anything else is a failed set-up.
        """
        cmd = self.command("daemon_warm", "src", dataset)
        if cmd is None:
            return
        done = run(cmd, env=self.env)
        if done.returncode not in (0, 3):
            raise RuntimeError(f"botsync daemon_warm ({dataset}) exited {done.returncode}: {done.stderr.strip()[-300:]}")

    def _run(self, key: str, side: str, dataset: str):
        cmd = self.command(key, side, dataset)
        if cmd is None:
            raise RuntimeError(f"botsync.json: command {key!r} is not set")
        return run(cmd, env=self.env).check(f"botsync {key} ({side}, {dataset})")


def _minus(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else round(after - before, 3)


def _plus(a: float | None, b: float | None) -> float | None:
    return a if b is None else b if a is None else round(a + b, 3)
