"""Bytes on the wire, counted by the kernel per port on loopback.

This module owns the packet counters: it installs them, reads them and
removes them. It does not know which tool is running; the caller takes a
snapshot before and after a timed command and subtracts.

Backends, best first (``WireCounter.open`` picks the first that works):

* ``nftables``: a private table ``inet botsync_bench`` with one named counter
  per (port, direction) on the ``output`` hook. Every loopback packet passes
  ``output`` exactly once, so each byte is counted once. Counts are IP packet
  lengths (headers included; with GSO on ``lo`` one large segment carries one
  set of headers, so the overhead is slightly below a real NIC's).
* ``iptables``: the same rules in a private chain ``BOTSYNC_BENCH`` jumped to
  from ``OUTPUT``; counters read from ``iptables -nvx -L``.
* ``lo``: transmitted bytes of the loopback device from ``/proc/net/dev``.
  This counts ALL loopback traffic (other processes included) and cannot tell
  ports apart: results are marked ``lo-all-traffic`` and are upper bounds.

Names of counters are ``<label>_up`` (to the server port) and ``<label>_down``
(from it), e.g. ``ssh_up`` for TCP 2222 and ``botsync_up`` for UDP 7474.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass

TABLE = "botsync_bench"
CHAIN = "BOTSYNC_BENCH"


@dataclass(frozen=True)
class Port:
    """A server port to count: ``label`` names the counters, ``proto`` is tcp or udp."""

    label: str
    proto: str
    number: int


class CounterError(RuntimeError):
    """A counter backend could not be installed or read."""


class WireCounter:
    """Per-port byte counters; ``snapshot()`` returns ``{name: bytes}``."""

    method = "none"

    def __init__(self, ports: list[Port]) -> None:
        self.ports = ports

    @staticmethod
    def open(ports: list[Port], prefer: str = "auto") -> WireCounter:
        """Install the first backend that works (or exactly ``prefer``)."""
        backends = {"nftables": NftCounter, "iptables": IptablesCounter, "lo": LoopbackCounter}
        order = list(backends) if prefer == "auto" else [prefer]
        errors = []
        for name in order:
            counter = backends[name](ports)
            try:
                counter.install()
                counter.snapshot()
                return counter
            except (CounterError, OSError, subprocess.CalledProcessError) as err:
                errors.append(f"{name}: {err}")
                counter.remove()
        raise CounterError("no byte counter works: " + "; ".join(errors))

    def names(self) -> list[str]:
        """The counter names this backend reports."""
        return [f"{p.label}_{d}" for p in self.ports for d in ("up", "down")]

    def install(self) -> None:
        """Create the counters (idempotent)."""

    def snapshot(self) -> dict[str, int]:
        """Current byte count of every counter."""
        raise NotImplementedError

    def remove(self) -> None:
        """Delete the counters; safe to call twice."""

    def delta(self, before: dict[str, int], label: str) -> tuple[int, int]:
        """(up, down) bytes for ``label`` since ``before``."""
        now = self.snapshot()
        return (
            now[f"{label}_up"] - before[f"{label}_up"],
            now[f"{label}_down"] - before[f"{label}_down"],
        )


class NftCounter(WireCounter):
    """Named counters in a private nftables table."""

    method = "nftables"

    def install(self) -> None:
        if not shutil.which("nft"):
            raise CounterError("nft not installed")
        rules = []
        for p in self.ports:
            rules.append(f"{p.proto} dport {p.number} counter name {p.label}_up")
            rules.append(f"{p.proto} sport {p.number} counter name {p.label}_down")
        counters = "\n".join(f"  counter {n} {{ }}" for n in self.names())
        script = (
            f"table inet {TABLE} {{\n{counters}\n"
            "  chain out {\n    type filter hook output priority -150; policy accept;\n    " + "\n    ".join(rules) + "\n  }\n}\n"
        )
        self.remove()
        _run(["nft", "-f", "-"], script)

    def snapshot(self) -> dict[str, int]:
        out = _run(["nft", "-j", "list", "counters", "table", "inet", TABLE])
        found = {}
        for item in json.loads(out).get("nftables", []):
            counter = item.get("counter")
            if counter:
                found[counter["name"]] = int(counter["bytes"])
        missing = set(self.names()) - set(found)
        if missing:
            raise CounterError(f"nftables table {TABLE} lacks counters {sorted(missing)}")
        return found

    def remove(self) -> None:
        if shutil.which("nft"):
            subprocess.run(["nft", "delete", "table", "inet", TABLE], check=False, capture_output=True)


class IptablesCounter(WireCounter):
    """Accounting rules (no target) in a private iptables chain."""

    method = "iptables"

    def install(self) -> None:
        if not shutil.which("iptables"):
            raise CounterError("iptables not installed")
        self.remove()
        _run(["iptables", "-N", CHAIN])
        for p in self.ports:
            _run(["iptables", "-A", CHAIN, "-p", p.proto, "--dport", str(p.number)])
            _run(["iptables", "-A", CHAIN, "-p", p.proto, "--sport", str(p.number)])
        _run(["iptables", "-I", "OUTPUT", "1", "-j", CHAIN])

    def snapshot(self) -> dict[str, int]:
        out = _run(["iptables", "-nvx", "-L", CHAIN])
        rows = [line.split() for line in out.splitlines()[2:] if line.strip()]
        if len(rows) != len(self.names()):
            raise CounterError(f"iptables chain {CHAIN} has {len(rows)} rules, expected {len(self.names())}")
        return {name: int(row[1]) for name, row in zip(self.names(), rows, strict=True)}

    def remove(self) -> None:
        if shutil.which("iptables"):
            subprocess.run(["iptables", "-D", "OUTPUT", "-j", CHAIN], check=False, capture_output=True)
            subprocess.run(["iptables", "-F", CHAIN], check=False, capture_output=True)
            subprocess.run(["iptables", "-X", CHAIN], check=False, capture_output=True)


class LoopbackCounter(WireCounter):
    """All bytes sent on ``lo``: every port reads the same total, ``down`` reads 0."""

    method = "lo-all-traffic"

    def snapshot(self) -> dict[str, int]:
        with open("/proc/net/dev") as dev:
            for line in dev:
                name, _, fields = line.partition(":")
                if name.strip() == "lo":
                    tx = int(fields.split()[8])
                    return {n: (tx if n.endswith("_up") else 0) for n in self.names()}
        raise CounterError("no lo device in /proc/net/dev")


def _run(cmd: list[str], stdin: str | None = None) -> str:
    done = subprocess.run(cmd, check=False, input=stdin, capture_output=True, text=True)
    if done.returncode != 0:
        detail = re.sub(r"\s+", " ", done.stderr).strip()
        raise CounterError(f"{' '.join(cmd)} failed: {detail}")
    return done.stdout
