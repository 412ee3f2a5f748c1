"""Tests of the benchmark harness itself (no root, no sshd, no mount needed).

    python3 -m unittest discover -s benches/e2e -p 'test_*.py'

They pin what the numbers rest on: datasets are deterministic and have the
promised shape, mutations change exactly what they claim, rsync's stats are
parsed, the report flags unverified runs, and the botsync section drives a
CLI (``fake_botsync.py``) through init, peers, a UDP daemon and pushes.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import tempfile
import unittest
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import gen_dataset as gen
from botsync_tool import BotsyncConfig, BotsyncTool, enable_skills
from measure import cpu_seconds, read_time_file, timed
from results import CaseResult, Run, fmt_bytes, load_json, markdown_table, write_json
from rsync_tool import parse_stats
from unison_tool import UnisonTool
from wire import LoopbackCounter, Port

#: A few files of each kind: enough to exercise every code path quickly.
TINY = replace(
    gen.Scale.quick(),
    notes=30,
    log_bytes=64 * gen.KIB,
    skills=3,
    small_files=50,
    small_dirs=5,
    large_bytes=3 * gen.MIB + 123,
)


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``root`` (``.botsync/`` excluded)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and rel.parts[0] != ".botsync":
            out[str(rel)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


class DatasetTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_same_seed_gives_identical_workspaces_and_another_seed_does_not(self) -> None:
        a = gen.generate(self.root / "a", TINY)
        b = gen.generate(self.root / "b", TINY)
        c = gen.generate(self.root / "c", TINY, seed=gen.DEFAULT_SEED + 1)
        for name in gen.DATASETS:
            self.assertEqual(tree_digest(a[name]), tree_digest(b[name]), name)
            self.assertNotEqual(tree_digest(a[name]), tree_digest(c[name]), name)

    def test_agent_workspace_has_the_promised_layout_and_sizes(self) -> None:
        ws = gen.generate(self.root, TINY, ("agent",))["agent"]
        notes = list((ws / "memory" / "notes").glob("*.md"))
        self.assertEqual(len(notes), TINY.notes)
        for note in notes:
            size = note.stat().st_size
            self.assertTrue(TINY.note_min_bytes <= size <= TINY.note_max_bytes, (note, size))
            self.assertTrue(note.read_bytes().startswith(b"# "))
        logs = list((ws / "memory" / "logs").glob("*.jsonl"))
        self.assertEqual(len(logs), TINY.logs)
        for log in logs:
            self.assertEqual(log.stat().st_size, TINY.log_bytes)
            for line in log.read_text().splitlines():
                self.assertIn("seq", json.loads(line))
        skills = sorted(p for p in (ws / "skills").iterdir())
        self.assertEqual(len(skills), TINY.skills)
        for skill in skills:
            for part in ("SKILL.md", "SYNC.json", "scripts/run.sh"):
                self.assertTrue((skill / part).is_file(), skill / part)
            self.assertTrue(os.access(skill / "scripts" / "run.sh", os.X_OK))
            self.assertTrue(list((skill / "data").glob("*.json")))
        self.assertTrue((ws / "MEMORY.md").is_file() and (ws / "USER.md").is_file())

    def test_notes_are_text_that_compresses_like_prose_not_random_bytes(self) -> None:
        import zlib

        ws = gen.generate(self.root, TINY, ("agent",))["agent"]
        text = b"".join(p.read_bytes() for p in sorted((ws / "memory" / "notes").glob("*.md")))
        ratio = len(text) / len(zlib.compress(text, 6))
        self.assertTrue(2.0 < ratio < 6.0, ratio)
        text.decode("ascii")

    def test_small_and_large_datasets_have_exact_counts_and_sizes(self) -> None:
        made = gen.generate(self.root, TINY, ("small", "large"))
        files = list((made["small"] / "memory" / "small").rglob("*.bin"))
        self.assertEqual(len(files), TINY.small_files)
        self.assertEqual({f.stat().st_size for f in files}, {TINY.small_file_bytes})
        self.assertEqual(len({f.parent for f in files}), TINY.small_dirs)
        self.assertEqual((made["large"] / "memory" / "big.bin").stat().st_size, TINY.large_bytes)

    def test_edit_session_edits_appends_adds_and_deletes_what_it_reports(self) -> None:
        ws = gen.generate(self.root, TINY, ("agent",))["agent"]
        before = tree_digest(ws)
        report = gen.edit_session(ws, seed=1000)
        after = tree_digest(ws)
        self.assertEqual((len(report.edited), len(report.appended), len(report.added), len(report.deleted)), (20, 2, 10, 3))
        changed = {p for p in before if p in after and before[p] != after[p]}
        self.assertEqual(changed, set(report.edited) | set(report.appended))
        self.assertEqual(set(after) - set(before), set(report.added))
        self.assertEqual(set(before) - set(after), set(report.deleted))

    def test_append_log_appends_exactly_the_bytes_asked_as_whole_json_lines(self) -> None:
        ws = gen.generate(self.root, TINY, ("agent",))["agent"]
        first = min((ws / "memory" / "logs").glob("*.jsonl"))
        old = first.read_bytes()
        path = gen.append_log(ws, gen.MIB, seed=3)
        new = path.read_bytes()
        self.assertEqual(path, first)
        self.assertEqual(new[: len(old)], old)
        self.assertEqual(len(new) - len(old), gen.MIB)
        for line in new[len(old) :].decode("ascii").splitlines():
            json.loads(line)

    def test_insert_byte_middle_shifts_the_tail_by_one_across_blocks(self) -> None:
        path = self.root / "big.bin"
        data = os.urandom(5 * 1000 + 7)
        path.write_bytes(data)
        old_block, gen.BLOCK = gen.BLOCK, 1000
        try:
            middle = gen.insert_byte_middle(path, b"!")
        finally:
            gen.BLOCK = old_block
        self.assertEqual(middle, len(data) // 2)
        self.assertEqual(path.read_bytes(), data[:middle] + b"!" + data[middle:])


class ReportTest(unittest.TestCase):
    def test_parse_stats_reads_grouped_numbers(self) -> None:
        out = "Number of files: 3\nTotal bytes sent: 1,234,567\nTotal bytes received: 890\n"
        self.assertEqual(parse_stats(out), (1234567, 890))
        self.assertEqual(parse_stats("nothing"), (None, None))

    def test_bytes_are_printed_in_decimal_units(self) -> None:
        self.assertEqual(fmt_bytes(435_000), "435 kB")
        self.assertEqual(fmt_bytes(1_170_000), "1.17 MB")
        self.assertEqual(fmt_bytes(None), "-")

    def test_table_flags_unverified_runs_and_explains_skipped_variants(self) -> None:
        good = Run(1.0, 100, 50, 90, 40, 8000, 7000, ok=True, verified=True)
        bad = Run(0.1, 10, 5, None, None, 9000, 9000, ok=True, verified=False)
        results = [
            CaseResult("agent", "noop", "rsync", [good]),
            CaseResult("agent", "noop", "botsync-cold", [bad]),
            CaseResult("agent", "noop", "botsync-daemon", skipped="botsync: not built"),
        ]
        table = markdown_table(results, ["rsync", "botsync-cold", "botsync-daemon"])
        row = table.splitlines()[2]
        self.assertIn("NOT VERIFIED", row)
        self.assertIn("0.10x, 0.10x", row)
        self.assertIn("botsync-daemon: skipped: botsync: not built.", table)

    def test_table_gives_botsync_against_unison_when_unison_ran_beside_it(self) -> None:
        rsync = Run(1.0, 400, 100, 450, 90, 8000, 7000, ok=True, verified=True)
        unison = Run(0.2, 200, 100, None, None, 9000, 9000, ok=True, verified=True)
        daemon = Run(0.05, 60, 30, None, None, 9000, 9000, ok=True, verified=True)
        results = [
            CaseResult("agent", "edit", "rsync", [rsync]),
            CaseResult("agent", "edit", "unison", [unison]),
            CaseResult("agent", "edit", "botsync-daemon", [daemon]),
        ]
        table = markdown_table(results, ["rsync", "unison", "botsync-daemon"])
        head, _, row = table.splitlines()[:3]
        self.assertIn("botsync-daemon / unison (time, bytes)", head)
        self.assertNotIn("unison / unison", head)
        self.assertIn("0.20x, 0.60x", row, "unison against rsync")
        self.assertIn("0.25x, 0.30x", row, "the daemon against unison")

    def test_table_says_failed_and_quotes_the_error(self) -> None:
        failed = Run(0.0, None, None, None, None, None, None, ok=False, error="CommandFailed: botsync init failed", verified=False)
        results = [CaseResult("agent", "initial", "rsync", []), CaseResult("agent", "initial", "botsync-cold", [failed])]
        table = markdown_table(results, ["rsync", "botsync-cold"])
        self.assertIn("| FAILED |", table)
        self.assertIn("botsync-cold: failed in agent/initial: CommandFailed: botsync init failed.", table)

    def test_saved_json_reads_back_to_the_same_table(self) -> None:
        runs = [Run(0.5 + i / 10, 100, 50, 90, 40, 8000, 7000, ok=True, verified=True, round=i) for i in range(3)]
        results = [CaseResult("large", "insert", "rsync", runs), CaseResult("large", "insert", "botsync-cold", skipped="not built")]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "run.json"
            write_json(path, {"quick": True}, results)
            meta, loaded = load_json(path)
        self.assertEqual(meta, {"quick": True})
        variants = ["rsync", "botsync-cold"]
        self.assertEqual(markdown_table(loaded, variants), markdown_table(results, variants))
        self.assertIn("0.60 s (0.50)", markdown_table(loaded, variants))


class UnisonToolTest(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        self.tool = UnisonTool(root, root / "src", root / "dst", counter=None, ssh_port=2222)  # type: ignore[arg-type]

    def tearDown(self) -> None:
        self.tmp.cleanup()

    def test_the_source_wins_over_ssh_and_the_server_is_timed_with_its_own_archives(self) -> None:
        cmd = self.tool.command("agent")
        src = str(self.tool.src_root / "agent")
        self.assertEqual(cmd[1], src)
        self.assertEqual(cmd[2], f"ssh://{self.tool.user}@127.0.0.1:2222/{self.tool.dst('agent')}")
        self.assertTrue(cmd[2].split(":2222")[1].startswith("//"), "an absolute path on the server")
        self.assertEqual(cmd[cmd.index("-force") + 1], src)
        for flag in ("-batch", "-auto", "-confirmbigdel=false"):
            self.assertIn(flag, cmd)
        self.assertEqual(cmd[cmd.index("-ignore") + 1], "Path .botsync")
        server = cmd[cmd.index("-servercmd") + 1]
        self.assertIn(f"UNISON={self.tool.archive_dir('server', 'agent')}", server)
        self.assertIn("/usr/bin/time -f '%M %U %S' -o", server)
        self.assertTrue(server.endswith(" unison"), server)
        self.assertEqual(self.tool.env("agent")["UNISON"], str(self.tool.archive_dir("client", "agent")))

    def test_reset_empties_the_destination_and_forgets_both_archives(self) -> None:
        for path in (self.tool.dst("small"), *(self.tool.archive_dir(s, "small") for s in ("client", "server"))):
            path.mkdir(parents=True)
            (path / "left-over").write_text("x")
        self.tool.reset("small")
        for path in (self.tool.dst("small"), *(self.tool.archive_dir(s, "small") for s in ("client", "server"))):
            self.assertEqual(list(path.iterdir()), [], path)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BotsyncSectionTest(unittest.TestCase):
    """The templated botsync section against the fake CLI, over real UDP on loopback."""

    def setUp(self) -> None:
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        raw = json.loads((HERE / "botsync.json").read_text())
        raw["dst_port"], raw["src_port"] = free_udp_port(), free_udp_port()
        raw["env"] = {}
        (root / "botsync.json").write_text(json.dumps(raw))
        cfg = BotsyncConfig.load(root / "botsync.json", HERE, str(HERE / "fake_botsync.py"))
        self.counter = LoopbackCounter([BotsyncTool.port(cfg)])
        self.src_root, self.dst_root = root / "src", root / "dst"
        gen.generate(self.src_root, TINY, ("agent",))
        self.tool = BotsyncTool(cfg, root, self.src_root, self.dst_root, self.counter)

    def tearDown(self) -> None:
        self.tool.close()
        self.tmp.cleanup()

    def test_push_in_both_variants_leaves_the_source_tree_at_the_destination(self) -> None:
        src, dst = self.src_root / "agent", self.tool.dst("agent")
        self.tool.reset("agent")
        self.assertEqual(json.loads((src / ".botsync" / "config.json").read_text())["sync_skills"], True)
        cold = self.tool.sync("agent", "botsync-cold")
        self.assertTrue(cold.ok, cold.error)
        self.assertEqual(tree_digest(src), tree_digest(dst))
        self.assertGreater(cold.wire_up, 0)
        self.assertGreater(cold.rss_client_kib, 0)
        self.assertGreater(cold.rss_server_kib, 0)
        gen.edit_session(src, seed=1)
        warm = self.tool.sync("agent", "botsync-daemon")
        self.assertTrue(warm.ok, warm.error)
        self.assertEqual(tree_digest(src), tree_digest(dst))
        self.assertTrue(self.tool.dst_daemon.alive())

    def test_enable_skills_keeps_existing_keys(self) -> None:
        ws = self.src_root / "agent"
        (ws / ".botsync").mkdir(exist_ok=True)
        (ws / ".botsync" / "config.json").write_text('{"name": "x", "sync_skills": false}')
        enable_skills(ws)
        self.assertEqual(json.loads((ws / ".botsync" / "config.json").read_text()), {"name": "x", "sync_skills": True})


class MeasureTest(unittest.TestCase):
    def test_timed_reports_peak_memory_of_the_child(self) -> None:
        # The child touches 64 MiB: its peak RSS must be at least that.
        res = timed([sys.executable, "-c", "b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096])"])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertGreaterEqual(res.rss_kib, 64 * 1024)

    def test_timed_reports_cpu_seconds_of_a_busy_child(self) -> None:
        res = timed([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"])
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertGreater(res.cpu_s, 0.0)
        self.assertGreater(cpu_seconds(os.getpid()), 0.0)

    def test_time_file_of_a_failed_command_is_read_from_its_last_line(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "time.txt"
            path.write_text("Command exited with non-zero status 3\n7312 0.25 0.06\n")
            self.assertEqual(read_time_file(path), (7312, 0.31))
            path.write_text("")
            self.assertEqual(read_time_file(path), (None, None))

    def test_a_hanging_command_is_killed_with_its_children_and_reported(self) -> None:
        res = timed(["sh", "-c", "sleep 30 & wait"], timeout_s=0.5)
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("timed out", res.stderr)


class CounterTest(unittest.TestCase):
    def test_loopback_fallback_reports_every_port_and_only_up(self) -> None:
        counter = LoopbackCounter([Port("ssh", "tcp", 2222), Port("botsync", "udp", 7474)])
        snap = counter.snapshot()
        self.assertEqual(set(snap), {"ssh_up", "ssh_down", "botsync_up", "botsync_down"})
        self.assertEqual(snap["ssh_down"], 0)
        self.assertEqual(snap["ssh_up"], snap["botsync_up"])


if __name__ == "__main__":
    unittest.main()
