#!/usr/bin/env python3
"""End-to-end benchmark: botsync against ``rsync -a --delete`` and Unison over SSH, side by side.

For each dataset (agent workspace, 20,000 small files, one large file) and
each case (initial sync, no-op re-sync, edit session, 1 MiB log append,
1 byte inserted mid-file) it measures wall time, bytes on the wire and peak
memory of both sides, for rsync, Unison and botsync (cold process and
against a running daemon), in the same run, and writes a markdown table plus the raw
JSON to ``benches/e2e/results/``.

This file owns the order of runs only: datasets and mutations live in
``gen_dataset.py``, the tools in ``rsync_tool.py`` / ``unison_tool.py`` /
``botsync_tool.py``,
measurement in ``measure.py`` / ``wire.py``, the report in ``results.py``.

How runs are ordered (and why):

* initial sync: every run starts from an empty destination (and, for botsync,
  new state on both sides), so each run is independent;
* no-op: every variant re-syncs an unchanged tree, ``--reps`` times;
* mutation cases: a *round* applies one fresh mutation (seeded by the round)
  to the shared source, then every tool pushes it; botsync's two variants
  share one destination, so they take turns round by round (rsync is
  measured every round). The order of tools alternates every other round so
  neither always enjoys the page cache the other warmed.

Before each measured run dirty pages are written back (``sync -f``); after it
the destination is compared with the source (``diff -r``, ignoring
``.botsync/``): a run that leaves a different tree is flagged NOT VERIFIED.

    sudo benches/e2e/run.py --quick           # smoke test, under a minute
    sudo benches/e2e/run.py                   # the full benchmark
    sudo benches/e2e/run.py --datasets agent --cases edit,append --reps 9
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import gen_dataset as gen
from botsync_tool import BotsyncConfig, BotsyncTool
from measure import flush, median, run, timed
from results import CaseResult, Run, fmt_bytes, fmt_time, markdown_table, write_json
from rsync_tool import RsyncTool
from unison_tool import UnisonTool
from wire import CounterError, WireCounter

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

#: The cases of each dataset, in order (PRODUCT.md section 7).
CASES = {
    "agent": ["initial", "noop", "edit", "append"],
    "small": ["initial", "noop"],
    "large": ["initial", "noop", "insert"],
}

#: Mutations applied to the source before each round of a case.
MUTATIONS = {
    "edit": gen.edit_session,
    "append": lambda ws, seed: gen.append_log(ws, gen.MIB, seed),
    "insert": lambda ws, seed: gen.insert_byte_middle(ws / "memory" / "big.bin"),
}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench_root = Path(args.bench_root)
    mnt = bench_root / "mnt"
    if not args.no_setup:
        subprocess.run([str(HERE / "setup.sh")], check=True, env={**os.environ, "BENCH_ROOT": str(bench_root)})
    if not os.path.ismount(mnt):
        print(f"run: {mnt} is not mounted: run benches/e2e/setup.sh (or drop --no-setup)", file=sys.stderr)
        return 2

    scale = gen.Scale.quick() if args.quick else gen.Scale.full()
    reps = args.reps or (1 if args.quick else 5)
    src_root, dst_root = mnt / "src", mnt / "dst"
    cfg = BotsyncConfig.load(Path(args.botsync_config), REPO, args.botsync_bin)
    try:
        counter = WireCounter.open([RsyncTool.port(args.ssh_port), BotsyncTool.port(cfg)], args.counter)
    except CounterError as err:
        print(f"run: {err}", file=sys.stderr)
        return 2
    print(f"run: bytes on the wire counted with {counter.method}", file=sys.stderr)

    tools = []
    skipped: dict[str, str] = {}
    for tool in (
        RsyncTool(bench_root, src_root, dst_root, counter, args.ssh_port),
        UnisonTool(bench_root, src_root, dst_root, counter, args.ssh_port),
        BotsyncTool(cfg, bench_root, src_root, dst_root, counter),
    ):
        ok, reason = tool.available()
        if ok and tool.name in args.tools:
            tools.append(tool)
        else:
            reason = reason or "not selected (--tools)"
            print(reason if tool.name == "botsync" else f"{tool.name}: {reason}", file=sys.stderr)
            skipped.update({v: reason for v in tool.variants})
    variants = [v for t in (RsyncTool, UnisonTool, BotsyncTool) for v in t.variants]

    results: list[CaseResult] = []
    meta = machine(args, scale, reps, counter.method, cfg, mnt)
    try:
        meta["ssh_true_s_median"] = ssh_baseline(tools, reps)
        for dataset in args.datasets:
            print(f"run: generating {dataset} in {src_root / dataset}", file=sys.stderr)
            gen.generate(src_root, scale, (dataset,), args.seed)
            flush(mnt)
            for case in CASES[dataset]:
                if case not in args.cases:
                    continue
                results += run_case(dataset, case, tools, skipped, src_root, mnt, reps)
            for tool in tools:
                tool.close()
            if not args.keep:
                for path in [src_root / dataset, *[t.dst(dataset) for t in tools]]:
                    shutil.rmtree(path, ignore_errors=True)
    finally:
        for tool in tools:
            tool.close()
        counter.remove()
        meta["loadavg_end"] = os.getloadavg()
        meta["cpu_pressure_end"] = cpu_pressure()
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H%M%SZ")
        out = Path(args.out) / f"{stamp}{'-quick' if args.quick else ''}.json"
        write_json(out, meta, results)
        table = markdown_table(results, variants)
        out.with_suffix(".md").write_text(header(meta) + "\n" + table + "\n")
        print(header(meta))
        print(table)
        print(f"\nraw results: {out}", file=sys.stderr)
        if args.teardown:
            subprocess.run([str(HERE / "teardown.sh")], check=False, env={**os.environ, "BENCH_ROOT": str(bench_root)})
    return 0


def run_case(dataset: str, case: str, tools: list, skipped: dict[str, str], src_root: Path, mnt: Path, reps: int) -> list[CaseResult]:
    """All rounds of one case for every tool; returns one result per variant.

    A tool that raises (a botsync template that no longer matches the CLI,
    a daemon that does not start) is recorded as a failed run and left out
    of the rest of the case; the other tools carry on.
    """
    results = {v: CaseResult(dataset, case, v, skipped=reason) for v, reason in skipped.items()}
    for tool in tools:
        for v in tool.variants:
            results[v] = CaseResult(dataset, case, v)
    src = src_root / dataset
    mutation = MUTATIONS.get(case)
    live = list(tools)
    if case != "initial":
        for tool in tools:
            if not _guard(tool, results, dataset, case, -1, lambda t=tool: t.prepare(dataset)):
                live.remove(tool)
    turns = max((len(t.variants) for t in tools), default=1)
    rounds = reps * turns if mutation else reps
    for r in range(rounds):
        if mutation:
            mutation(src, 1000 + r)
        order = live if (r // turns) % 2 == 0 else list(reversed(live))
        for tool in order:
            mine = [tool.variants[r % len(tool.variants)]] if mutation else tool.variants
            for variant in mine:

                def measure(tool=tool, variant=variant, r=r) -> None:
                    if case == "initial":
                        tool.reset(dataset)
                    flush(mnt)
                    result: Run = tool.sync(dataset, variant)
                    result.round = r
                    result.verified = result.ok and same_tree(src, tool.dst(dataset))
                    results[variant].runs.append(result)
                    print(progress(dataset, case, variant, r, result), file=sys.stderr)

                if not _guard(tool, results, dataset, case, r, measure, variant):
                    live.remove(tool)
                    break
    return list(results.values())


def _guard(tool, results: dict[str, CaseResult], dataset: str, case: str, r: int, step, variant: str | None = None) -> bool:
    """Run ``step``; on an exception record a failed run for the tool and return False."""
    try:
        step()
        return True
    except Exception as err:  # noqa: BLE001 - any failure of one tool must not stop the others
        message = f"{type(err).__name__}: {err}"
        print(f"  {dataset}/{case} {tool.name} round {r}: FAILED: {message}", file=sys.stderr)
        for v in [variant] if variant else tool.variants:
            results[v].runs.append(Run(0.0, None, None, None, None, None, None, ok=False, error=message, verified=False, round=r))
        return False


def same_tree(a: Path, b: Path) -> bool:
    """Whether two trees hold the same files and bytes, ignoring ``.botsync/``."""
    done = subprocess.run(
        ["diff", "-rq", "--no-dereference", "-x", ".botsync", str(a), str(b)], check=False, capture_output=True, text=True
    )
    if done.returncode != 0:
        print(f"run: {b} differs from {a}: {done.stdout.strip().splitlines()[:3]}", file=sys.stderr)
    return done.returncode == 0


def progress(dataset: str, case: str, variant: str, r: int, res: Run) -> str:
    """One line per measured run on stderr."""
    state = "ok" if res.ok and res.verified else "FAILED" if not res.ok else "NOT VERIFIED"
    line = f"  {dataset}/{case} {variant} round {r}: {fmt_time(res.wall_s)} {fmt_bytes(res.wire_total)} {state}"
    return line + (f": {res.error}" if res.error else "")


def ssh_baseline(tools: list, reps: int) -> float | None:
    """Median wall time of ``ssh host true``: the SSH set-up every rsync run pays."""
    rsync = next((t for t in tools if t.name == "rsync"), None)
    if rsync is None:
        return None
    cmd = [*rsync.ssh_command(), f"{rsync.user}@127.0.0.1", "true"]
    walls = [timed(cmd).check("ssh baseline").wall_s for _ in range(reps)]
    return median(walls)


def machine(args: argparse.Namespace, scale: gen.Scale, reps: int, counter: str, cfg: BotsyncConfig, mnt: Path) -> dict:
    """Everything needed to reproduce or compare a run."""

    def out(cmd: list[str]) -> str:
        try:
            done = run(cmd)
        except OSError:
            return ""
        return (done.stdout or done.stderr).strip()

    lscpu = dict(line.split(":", 1) for line in out(["lscpu"]).splitlines() if ":" in line)
    source = out(["findmnt", "-n", "-o", "SOURCE", str(mnt)])
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "argv": sys.argv,
        "quick": args.quick,
        "reps": reps,
        "seed": args.seed,
        "scale": asdict(scale),
        "kernel": platform.release(),
        "cpu": lscpu.get("Model name", "").strip(),
        "cpus": os.cpu_count(),
        "mem_total": out(["sh", "-c", "grep MemTotal /proc/meminfo"]),
        "rsync": " ".join(out(["rsync", "--version"]).split()[:3]) if shutil.which("rsync") else None,
        "ssh": out(["ssh", "-V"]),
        "fs": " ".join(out(["findmnt", "-n", "-o", "FSTYPE,OPTIONS", str(mnt)]).split()),
        "fs_journal": "has_journal" in out(["dumpe2fs", "-h", source]) if source else None,
        "wire_counter": counter,
        "botsync_binary": str(cfg.binary),
        "botsync_version": out([str(cfg.binary), "--version"]) if cfg.binary.is_file() else None,
        "git_commit": out(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "loadavg_start": os.getloadavg(),
        "cpu_pressure_start": cpu_pressure(),
    }


def cpu_pressure() -> str | None:
    """The "some" line of /proc/pressure/cpu: the share of time tasks waited for a CPU."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return None


def header(meta: dict) -> str:
    """Two lines above the table: machine and conditions."""
    return (
        f"Run {meta['date_utc']} ({'quick' if meta['quick'] else 'full'}, median of {meta['reps']}), "
        f"{meta['cpu']} x{meta['cpus']}, Linux {meta['kernel']}, {meta['rsync']}, fs {meta['fs']} "
        f"(journal: {meta['fs_journal']}), bytes via {meta['wire_counter']}; "
        f"botsync: {meta['botsync_version'] or 'not built'}; "
        f"`ssh true` alone: {fmt_time(meta.get('ssh_true_s_median'))}; "
        f"load average {meta['loadavg_start'][0]:.1f} at start, {meta.get('loadavg_end', (0,))[0]:.1f} at end.\n"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small datasets (300 notes, 2,000 files, 64 MiB)")
    p.add_argument("--reps", type=int, default=0, help="runs per case (default 5, quick 1)")
    p.add_argument("--datasets", default=",".join(gen.DATASETS), help="comma list of agent,small,large")
    p.add_argument("--cases", default="initial,noop,edit,append,insert", help="comma list of cases")
    p.add_argument("--tools", default="rsync,unison,botsync", help="comma list of rsync,unison,botsync")
    p.add_argument("--seed", type=int, default=gen.DEFAULT_SEED)
    p.add_argument("--bench-root", default=os.environ.get("BENCH_ROOT", "/var/tmp/botsync-bench"))
    p.add_argument("--ssh-port", type=int, default=2222)
    p.add_argument("--botsync-config", default=str(HERE / "botsync.json"))
    p.add_argument("--botsync-bin", default=os.environ.get("BOTSYNC_BIN"), help="overrides botsync.json's binary")
    p.add_argument("--counter", default="auto", choices=["auto", "nftables", "iptables", "lo"])
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--no-setup", action="store_true", help="do not run setup.sh first")
    p.add_argument("--teardown", action="store_true", help="run teardown.sh at the end")
    p.add_argument("--keep", action="store_true", help="keep the datasets on the benchmark fs afterwards")
    args = p.parse_args(argv)
    args.datasets = [d for d in args.datasets.split(",") if d]
    args.cases = [c for c in args.cases.split(",") if c]
    args.tools = [t for t in args.tools.split(",") if t]
    for d in args.datasets:
        if d not in CASES:
            p.error(f"unknown dataset {d!r}: choose from {', '.join(CASES)}")
    if args.reps < 0:
        p.error("--reps must be positive")
    return args


if __name__ == "__main__":
    sys.exit(main())
