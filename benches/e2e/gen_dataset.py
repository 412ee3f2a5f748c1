#!/usr/bin/env python3
"""Deterministic datasets and mutations for the end-to-end benchmark.

This module owns the *content* the benchmark syncs: three workspaces laid out
the way botsync's default selection sees them, generated from a seed so two
runs (or two machines) produce byte-identical trees, and the mutation
functions that model what agents do between syncs.

It does not own how anything is synced or measured (see ``run.py``), nor
botsync's configuration (see ``botsync_tool.py``).

Datasets (``Scale.full()``; ``Scale.quick()`` shrinks them for smoke tests):

* ``agent``: ``memory/notes/*.md`` (3,000 notes of 1-30 KB of markdown text,
  not random bytes, so it compresses like real notes), ``memory/logs/*.jsonl``
  (five 8 MB JSONL logs), ``MEMORY.md``, ``USER.md`` and 40 skill folders
  ``skills/<name>/{SKILL.md,SYNC.json,scripts/run.sh,data/*.json}``.
  ``skills/`` is opt-in in botsync: the harness enables it in the config.
* ``small``: 20,000 files of 4 KiB random bytes in ``memory/small/dNN/``.
* ``large``: one 512 MiB pseudo-random file ``memory/big.bin``.

Usage::

    gen_dataset.py generate DIR [--quick] [--datasets agent,small,large]
    gen_dataset.py edit-session WS [--seed N]
    gen_dataset.py append-log WS [--bytes N] [--seed N]
    gen_dataset.py insert-byte FILE

Standard library only (Python 3.11).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

#: Default seed: every dataset and mutation derives its own stream from it.
DEFAULT_SEED = 7

#: Names of the datasets, in the order the benchmark runs them.
DATASETS = ("agent", "small", "large")

#: Block size for large-file generation and streaming rewrites.
BLOCK = MIB


@dataclass(frozen=True)
class Scale:
    """How big each dataset is; ``full`` is the benchmark, ``quick`` a smoke test."""

    notes: int
    note_min_bytes: int
    note_max_bytes: int
    logs: int
    log_bytes: int
    skills: int
    small_files: int
    small_dirs: int
    small_file_bytes: int
    large_bytes: int

    @staticmethod
    def full() -> Scale:
        """The sizes from the benchmark issue."""
        return Scale(
            notes=3000,
            note_min_bytes=1000,
            note_max_bytes=30000,
            logs=5,
            log_bytes=8 * MIB,
            skills=40,
            small_files=20000,
            small_dirs=100,
            small_file_bytes=4 * KIB,
            large_bytes=512 * MIB,
        )

    @staticmethod
    def quick() -> Scale:
        """About a tenth of the full sizes: the whole pipeline in under a minute."""
        return Scale(
            notes=300,
            note_min_bytes=1000,
            note_max_bytes=30000,
            logs=5,
            log_bytes=1 * MIB,
            skills=40,
            small_files=2000,
            small_dirs=100,
            small_file_bytes=4 * KIB,
            large_bytes=64 * MIB,
        )


# --------------------------------------------------------------------------
# Text that looks and compresses like an agent's notes.

_WORDS = """
the of and to a in is that for it on with as was be this by are or at from
agent memory note user task tool session log sync file skill config peer
server machine daemon deploy build test review merge branch commit release
prompt model context token budget cache index store chunk hash manifest
plan step goal result error retry timeout queue job schedule cron backup
remember prefer always never usually today yesterday tomorrow week month
decided because however then after before while until unless although
python rust shell script markdown json yaml api endpoint request response
latency throughput memory disk network tailscale ssh quic port address
project customer meeting email calendar invoice report summary draft idea
question answer follow up check update fix add remove rename move copy
important urgent later maybe done open closed blocked waiting pending
should could would will can must may might need want like use make get
new old first last next previous current other same different small large
good bad fast slow simple complex clear stable flaky broken working fine
data state key value list map set entry record field table row column
read write append delete create open close start stop run restart reload
""".split()

#: Words that make readable names (the first 20 are function words).
_CONTENT_WORDS = _WORDS[20:]

_TOOLS = ["shell", "browser", "editor", "search", "git", "http", "calendar", "mail"]
_KINDS = ["message", "tool_call", "tool_result", "observation", "decision", "plan"]
_AGENTS = ["atlas", "birch", "cedar", "delta", "ember"]


class Prose:
    """A seeded generator of markdown-like text with a Zipf word distribution."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._cum = []
        total = 0.0
        for rank in range(len(_WORDS)):
            total += 1.0 / (rank + 8)
            self._cum.append(total)

    def words(self, n: int) -> list[str]:
        """``n`` words drawn from the vocabulary, frequent words more often."""
        return self.rng.choices(_WORDS, cum_weights=self._cum, k=n)

    def sentence(self) -> str:
        """One capitalized sentence of 6-20 words."""
        words = self.words(self.rng.randint(6, 20))
        text = " ".join(words)
        return text[0].upper() + text[1:] + "."

    def paragraph(self) -> str:
        """Two to six sentences."""
        return " ".join(self.sentence() for _ in range(self.rng.randint(2, 6)))

    def slug(self, n: int = 3) -> str:
        """A lowercase, hyphenated name of ``n`` distinct content words."""
        return "-".join(self.rng.sample(_CONTENT_WORDS, n))

    def block(self) -> str:
        """One markdown block: heading, paragraph, list, link list or code."""
        pick = self.rng.random()
        if pick < 0.12:
            return "## " + " ".join(self.words(self.rng.randint(2, 5))).title()
        if pick < 0.55:
            return self.paragraph()
        if pick < 0.80:
            items = []
            for _ in range(self.rng.randint(2, 7)):
                box = self.rng.choice(["- ", "- [ ] ", "- [x] "])
                items.append(box + self.sentence())
            return "\n".join(items)
        if pick < 0.92:
            links = [f"- [[{self.slug()}]] {self.sentence()}" for _ in range(self.rng.randint(1, 4))]
            return "\n".join(links)
        lines = [f"{self.rng.choice(_TOOLS)} {' '.join(self.words(4))}" for _ in range(self.rng.randint(2, 6))]
        return "```sh\n" + "\n".join(lines) + "\n```"

    def markdown(self, title: str, size: int) -> bytes:
        """A markdown document of exactly ``size`` bytes (ASCII, ends with a newline)."""
        day = self.rng.randint(1, 28)
        parts = [
            f"# {title}",
            f"created: 2026-{self.rng.randint(1, 11):02d}-{day:02d}  tags: #{self.rng.choice(_WORDS)} #{self.rng.choice(_WORDS)}",
        ]
        length = sum(len(p) + 2 for p in parts)
        while length < size:
            block = self.block()
            parts.append(block)
            length += len(block) + 2
        return _exact("\n\n".join(parts), size)

    def log_line(self, seq: int) -> dict:
        """One JSONL event as an agent runtime would log it."""
        kind = self.rng.choice(_KINDS)
        event = {
            "ts": f"2026-11-{1 + seq // 86400 % 28:02d}T{seq // 3600 % 24:02d}:{seq // 60 % 60:02d}:{seq % 60:02d}Z",
            "seq": seq,
            "agent": self.rng.choice(_AGENTS),
            "kind": kind,
        }
        if kind.startswith("tool"):
            event["tool"] = self.rng.choice(_TOOLS)
        event["text"] = " ".join(self.sentence() for _ in range(self.rng.randint(1, 4)))
        return event


def _exact(text: str, size: int) -> bytes:
    """``text`` cut or padded to exactly ``size`` bytes, ending with a newline."""
    data = text.encode("ascii")[: size - 1]
    data += b" " * (size - 1 - len(data))
    return data + b"\n"


def _rng(seed: int, *labels: object) -> random.Random:
    """An independent stream for one dataset part (str seeds hash via SHA-512: stable)."""
    return random.Random("/".join([str(seed), *map(str, labels)]))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        out.write(data)


def _log_lines(prose: Prose, start_seq: int, target: int) -> tuple[bytes, int]:
    """JSONL lines totalling exactly ``target`` bytes; returns them and the next seq."""
    chunks = []
    total = 0
    seq = start_seq
    while target - total > 2 * KIB:
        line = (json.dumps(prose.log_line(seq), separators=(",", ":")) + "\n").encode("ascii")
        chunks.append(line)
        total += len(line)
        seq += 1
    chunks.append(_padded_log_line(prose, seq, target - total))
    return b"".join(chunks), seq + 1


def _padded_log_line(prose: Prose, seq: int, size: int) -> bytes:
    """One JSONL line of exactly ``size`` bytes (its text field is padded)."""
    event = prose.log_line(seq)
    event["text"] = ""
    empty = len(json.dumps(event, separators=(",", ":"))) + 1
    if size < empty:
        raise ValueError(f"cannot write a log line of {size} bytes: the shortest is {empty}")
    filler = ""
    while len(filler) < size - empty:
        filler += prose.sentence() + " "
    event["text"] = filler[: size - empty]
    line = (json.dumps(event, separators=(",", ":")) + "\n").encode("ascii")
    assert len(line) == size, "ascii filler needs no JSON escaping"
    return line


# --------------------------------------------------------------------------
# Datasets.


def generate_agent(ws: Path, scale: Scale, seed: int = DEFAULT_SEED) -> None:
    """The agent workspace: notes, logs, MEMORY.md, USER.md and skill folders."""
    prose = Prose(_rng(seed, "agent", "top"))
    _write(ws / "MEMORY.md", prose.markdown("Memory", 6 * KIB))
    _write(ws / "USER.md", prose.markdown("User", 3 * KIB))
    for i in range(scale.notes):
        prose = Prose(_rng(seed, "note", i))
        size = prose.rng.randint(scale.note_min_bytes, scale.note_max_bytes)
        title = " ".join(prose.words(4)).title()
        _write(ws / "memory" / "notes" / f"n{i:05d}-{prose.slug()}.md", prose.markdown(title, size))
    for i in range(scale.logs):
        prose = Prose(_rng(seed, "log", i))
        data, _ = _log_lines(prose, i * 1_000_000, scale.log_bytes)
        _write(ws / "memory" / "logs" / f"{_AGENTS[i % len(_AGENTS)]}-{i}.jsonl", data)
    for i in range(scale.skills):
        _generate_skill(ws / "skills", i, seed)


def _generate_skill(root: Path, index: int, seed: int) -> None:
    prose = Prose(_rng(seed, "skill", index))
    name = f"{prose.slug(2)}-{index:02d}"
    skill = root / name
    datafiles = [f"{w}.json" for w in dict.fromkeys(prose.words(prose.rng.randint(2, 6)))]
    sync = {
        "version": 1,
        "state": "data/state.json",
        "generators": [{"run": "scripts/run.sh", "output": "SKILL.md"}],
        "merge": {"data/*.json": "json"},
    }
    _write(skill / "SYNC.json", (json.dumps(sync, indent=2) + "\n").encode("ascii"))
    _write(skill / "SKILL.md", prose.markdown(f"Skill {name}", prose.rng.randint(1 * KIB, 6 * KIB)))
    script = "#!/bin/sh\nset -eu\n# render state into SKILL.md\n" + "\n".join(
        f"echo '{prose.sentence()}'" for _ in range(prose.rng.randint(3, 12))
    )
    _write(skill / "scripts" / "run.sh", (script + "\n").encode("ascii"))
    (skill / "scripts" / "run.sh").chmod(0o755)
    for datafile in datafiles:
        entries = {prose.slug(2): {"value": prose.sentence(), "n": prose.rng.randint(0, 999)} for _ in range(prose.rng.randint(5, 120))}
        _write(skill / "data" / datafile, (json.dumps(entries, indent=2, sort_keys=True) + "\n").encode("ascii"))


def generate_small(ws: Path, scale: Scale, seed: int = DEFAULT_SEED) -> None:
    """``small_files`` files of random bytes spread over ``small_dirs`` directories."""
    per_dir = -(-scale.small_files // scale.small_dirs)
    for d in range(scale.small_dirs):
        rng = _rng(seed, "small", d)
        folder = ws / "memory" / "small" / f"d{d:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(d * per_dir, min((d + 1) * per_dir, scale.small_files)):
            with open(folder / f"f{i:05d}.bin", "wb") as out:
                out.write(rng.randbytes(scale.small_file_bytes))


def generate_large(ws: Path, scale: Scale, seed: int = DEFAULT_SEED) -> None:
    """One pseudo-random file of ``large_bytes``, written in 1 MiB blocks."""
    rng = _rng(seed, "large")
    path = ws / "memory" / "big.bin"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as out:
        left = scale.large_bytes
        while left > 0:
            n = min(BLOCK, left)
            out.write(rng.randbytes(n))
            left -= n


GENERATORS = {"agent": generate_agent, "small": generate_small, "large": generate_large}


def generate(root: Path, scale: Scale, datasets: tuple[str, ...] = DATASETS, seed: int = DEFAULT_SEED) -> dict[str, Path]:
    """(Re)create each dataset as a workspace ``root/<name>``; returns name -> path.

    An existing workspace of that name is removed first, so a run always
    starts from the seeded content, never from a previous run's mutations.
    """
    out = {}
    for name in datasets:
        ws = root / name
        if ws.exists():
            shutil.rmtree(ws)
        ws.mkdir(parents=True)
        GENERATORS[name](ws, scale, seed)
        out[name] = ws
    return out


# --------------------------------------------------------------------------
# Mutations: what agents do between two syncs.


def _notes(ws: Path) -> list[Path]:
    return sorted((ws / "memory" / "notes").glob("*.md"))


def _logs(ws: Path) -> list[Path]:
    return sorted((ws / "memory" / "logs").glob("*.jsonl"))


@dataclass
class EditReport:
    """What one edit session changed, relative to the workspace root."""

    edited: list[str]
    appended: list[str]
    added: list[str]
    deleted: list[str]
    bytes_written: int


def edit_session(ws: Path, seed: int = DEFAULT_SEED, edits: int = 20, appends: int = 2, adds: int = 10, deletes: int = 3) -> EditReport:
    """A typical agent session: edit 20 notes, append to 2 logs, add 10 notes, delete 3.

    An edit replaces one line in the middle of a note and appends a bullet, so
    both size and content change (rsync's quick check cannot miss it). Each
    call with a different ``seed`` is a different session of the same shape.
    """
    prose = Prose(_rng(seed, "edit-session"))
    notes = _notes(ws)
    if len(notes) < edits + deletes:
        raise ValueError(f"{ws}: {len(notes)} notes, an edit session needs {edits + deletes}")
    chosen = prose.rng.sample(notes, edits + deletes)
    report = EditReport([], [], [], [], 0)
    for note in chosen[:edits]:
        lines = note.read_bytes().decode("ascii").split("\n")
        at = prose.rng.randint(len(lines) // 3, max(len(lines) // 3, 2 * len(lines) // 3))
        lines[at] = prose.sentence()
        text = "\n".join(lines).rstrip("\n") + f"\n- [ ] {prose.sentence()}\n"
        note.write_bytes(text.encode("ascii"))
        report.edited.append(str(note.relative_to(ws)))
        report.bytes_written += len(text)
    for log in prose.rng.sample(_logs(ws), appends):
        data = b"".join(
            (json.dumps(prose.log_line(9_000_000 + seed * 100 + k), separators=(",", ":")) + "\n").encode("ascii") for k in range(20)
        )
        with open(log, "ab") as out:
            out.write(data)
        report.appended.append(str(log.relative_to(ws)))
        report.bytes_written += len(data)
    for k in range(adds):
        size = prose.rng.randint(1000, 30000)
        path = ws / "memory" / "notes" / f"s{seed:04d}-{k:02d}-{prose.slug()}.md"
        _write(path, prose.markdown(" ".join(prose.words(4)).title(), size))
        report.added.append(str(path.relative_to(ws)))
        report.bytes_written += size
    for note in chosen[edits:]:
        note.unlink()
        report.deleted.append(str(note.relative_to(ws)))
    return report


def append_log(ws: Path, nbytes: int = MIB, seed: int = DEFAULT_SEED) -> Path:
    """Append exactly ``nbytes`` of whole JSONL lines to the first log; returns it."""
    logs = _logs(ws)
    if not logs:
        raise FileNotFoundError(f"{ws}: no memory/logs/*.jsonl to append to")
    data, _ = _log_lines(Prose(_rng(seed, "append-log")), 5_000_000 + seed * 100_000, nbytes)
    with open(logs[0], "ab") as out:
        out.write(data)
    return logs[0]


def insert_byte_middle(path: Path, byte: bytes = b"!") -> int:
    """Insert one byte at the middle of ``path``, in place; returns the offset.

    The tail is shifted by one byte with a streaming copy that walks backwards
    in 1 MiB blocks, so memory stays constant and no second copy of the file
    is needed (the inode is kept, as an in-place editor would).
    """
    if len(byte) != 1:
        raise ValueError(f"insert one byte, not {len(byte)}")
    size = path.stat().st_size
    middle = size // 2
    with open(path, "r+b") as f:
        end = size
        while end > middle:
            start = max(middle, end - BLOCK)
            f.seek(start)
            block = f.read(end - start)
            f.seek(start + 1)
            f.write(block)
            end = start
        f.seek(middle)
        f.write(byte)
    return middle


# --------------------------------------------------------------------------
# Command line.


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate", help="create the datasets under DIR")
    gen.add_argument("dir", type=Path)
    gen.add_argument("--quick", action="store_true", help="smaller datasets for a smoke test")
    gen.add_argument("--datasets", default=",".join(DATASETS))
    gen.add_argument("--seed", type=int, default=DEFAULT_SEED)
    edit = sub.add_parser("edit-session", help="edit 20 notes, append to 2 logs, add 10, delete 3")
    edit.add_argument("ws", type=Path)
    edit.add_argument("--seed", type=int, default=DEFAULT_SEED)
    app = sub.add_parser("append-log", help="append bytes of JSONL to the first log")
    app.add_argument("ws", type=Path)
    app.add_argument("--bytes", type=int, default=MIB)
    app.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ins = sub.add_parser("insert-byte", help="insert one byte in the middle of FILE")
    ins.add_argument("file", type=Path)
    args = parser.parse_args(argv)

    if args.cmd == "generate":
        names = tuple(n for n in args.datasets.split(",") if n)
        unknown = [n for n in names if n not in GENERATORS]
        if unknown:
            parser.error(f"unknown dataset {unknown[0]!r}: choose from {', '.join(DATASETS)}")
        scale = Scale.quick() if args.quick else Scale.full()
        for name, ws in generate(args.dir, scale, names, args.seed).items():
            print(f"{name}: {ws}")
        print(json.dumps(asdict(scale)))
    elif args.cmd == "edit-session":
        print(json.dumps(asdict(edit_session(args.ws, args.seed)), indent=2))
    elif args.cmd == "append-log":
        print(append_log(args.ws, args.bytes, args.seed))
    elif args.cmd == "insert-byte":
        print(insert_byte_middle(args.file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
