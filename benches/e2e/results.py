"""Results of the end-to-end benchmark: the records, their summary, the report.

This module owns the shape of a measurement (``Run``, ``CaseResult``), the
statistics reported (median wall time and bytes, peak memory over runs), the
raw JSON file and the markdown table. It does not run anything.

Bytes are "on the wire in both directions" (PRODUCT.md section 7): the port
counters of ``wire.py``. For rsync the payload from ``--stats`` (before SSH
framing and encryption) is shown next to it in parentheses.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from measure import median, peak


@dataclass
class Run:
    """One measured sync."""

    wall_s: float
    wire_up: int | None
    wire_down: int | None
    payload_up: int | None
    payload_down: int | None
    rss_client_kib: int | None
    rss_server_kib: int | None
    ok: bool
    error: str | None = None
    verified: bool | None = None
    round: int = 0
    cpu_client_s: float | None = None
    cpu_server_s: float | None = None

    @property
    def wire_total(self) -> int | None:
        """Bytes in both directions, from the port counters."""
        if self.wire_up is None or self.wire_down is None:
            return None
        return self.wire_up + self.wire_down

    @property
    def payload_total(self) -> int | None:
        """Bytes in both directions reported by the tool itself, if it does."""
        if self.payload_up is None or self.payload_down is None:
            return None
        return self.payload_up + self.payload_down


@dataclass
class CaseResult:
    """All runs of one variant (rsync, botsync-cold, ...) on one case."""

    dataset: str
    case: str
    variant: str
    runs: list[Run] = field(default_factory=list)
    skipped: str | None = None

    def summary(self) -> dict:
        """Median wall and bytes, peak RSS, and whether every run succeeded and verified."""
        good = [r for r in self.runs if r.ok]
        walls = [r.wall_s for r in good]
        return {
            "runs": len(self.runs),
            "ok_runs": len(good),
            "wall_s_median": median(walls),
            "wall_s_min": min(walls) if walls else None,
            "wall_s_max": max(walls) if walls else None,
            "wire_bytes_median": median([r.wire_total for r in good]),
            "payload_bytes_median": median([r.payload_total for r in good]),
            "cpu_client_s_median": median([r.cpu_client_s for r in good]),
            "cpu_server_s_median": median([r.cpu_server_s for r in good]),
            "rss_client_kib_peak": peak([r.rss_client_kib for r in good]),
            "rss_server_kib_peak": peak([r.rss_server_kib for r in good]),
            "all_verified": all(r.verified for r in self.runs) if self.runs else False,
        }

    def to_json(self) -> dict:
        """Raw runs plus the summary."""
        runs = []
        for r in self.runs:
            d = asdict(r)
            d["wire_total"] = r.wire_total
            d["payload_total"] = r.payload_total
            runs.append(d)
        return {
            "dataset": self.dataset,
            "case": self.case,
            "variant": self.variant,
            "skipped": self.skipped,
            "summary": self.summary(),
            "runs": runs,
        }


#: PRODUCT.md section 7: anchors measured on this machine and botsync's targets.
TARGETS = {
    ("agent", "initial"): "rsync 1.29 s; target <= 1.0x rsync",
    ("agent", "noop"): "rsync 0.53 s, Unison 0.066 s; target <= 0.1x rsync and <= Unison",
    ("agent", "edit"): "rsync 0.52 s 435 kB, Unison 0.17 s; target <= Unison time, <= 0.25x rsync bytes",
    ("agent", "append"): "rsync 0.53 s 1.17 MB, Unison 0.12 s; target <= Unison time, <= 1.05x appended (<= 0.45 MB zstd)",
    ("small", "initial"): "rsync 2.15 s; target <= 1.0x rsync",
    ("small", "noop"): "(no anchor)",
    ("large", "initial"): "rsync 4.02 s; target <= 0.6x rsync",
    ("large", "noop"): "(no anchor)",
    ("large", "insert"): "rsync 2.56 s 278 kB; target <= 0.5x rsync time and bytes",
}

#: How each case is described in the table.
CASE_TITLES = {
    "initial": "initial sync",
    "noop": "no-op re-sync",
    "edit": "edit session (20 edits, 2 appends, 10 adds, 3 deletes)",
    "append": "1 MiB appended to a log",
    "insert": "1 byte inserted mid-file",
}


def fmt_time(seconds: float | None) -> str:
    """``0.53 s`` or ``-``."""
    return "-" if seconds is None else f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def fmt_wall(summary: dict) -> str:
    """Median wall time and, in brackets, the fastest run: ``0.53 s (0.49)``.

    On a shared machine the minimum is the run least disturbed by others.
    """
    if summary["wall_s_median"] is None:
        return "-"
    if summary["runs"] < 2:
        return fmt_time(summary["wall_s_median"])
    return f"{fmt_time(summary['wall_s_median'])} ({summary['wall_s_min']:.2f})"


def fmt_bytes(n: float | None) -> str:
    """Decimal units as in PRODUCT.md: ``435 kB``, ``1.17 MB``."""
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            value = n / size
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{n:.0f} B"


def fmt_rss(client: int | None, server: int | None) -> str:
    """``7.1 / 9.8 MiB`` (client / server peak)."""

    def mib(k: int | None) -> str:
        return "-" if k is None else f"{k / 1024:.1f}"

    return f"{mib(client)} / {mib(server)} MiB"


def fmt_cpu(client: float | None, server: float | None) -> str:
    """``0.12 / 0.30 s`` (client / server CPU seconds, user + system, median)."""

    def sec(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    return f"{sec(client)} / {sec(server)} s"


def fmt_ratio(a: float | None, b: float | None) -> str:
    """``a / b`` as ``0.42x``, or ``-``."""
    if a is None or not b:
        return "-"
    return f"{a / b:.2f}x"


def markdown_table(results: list[CaseResult], variants: list[str]) -> str:
    """One row per case, a column group per variant, ratios against rsync (and Unison)."""
    by_key: dict[tuple[str, str], dict[str, CaseResult]] = {}
    for res in results:
        by_key.setdefault((res.dataset, res.case), {})[res.variant] = res
    others = [v for v in variants if v != "rsync"]
    head = ["case", "rsync time (min)", "rsync bytes (payload)", "rsync CPU c/s", "rsync RSS c/s"]
    for v in others:
        head += [f"{v} time (min)", f"{v} bytes", f"{v} CPU c/s", f"{v} RSS c/s"]
    head += [f"{v} / rsync (time, bytes)" for v in others]
    # botsync's variants against Unison too, when it ran beside them.
    against_unison = [v for v in others if v != "unison"] if "unison" in others else []
    head += [f"{v} / unison (time, bytes)" for v in against_unison]
    head += ["PRODUCT.md anchor (full datasets) / target"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes: dict[str, str] = {}
    for (dataset, case), group in by_key.items():
        row = [f"{dataset}: {CASE_TITLES.get(case, case)}"]
        base = group.get("rsync")
        bsum = base.summary() if base else {}
        if base and base.runs:
            row += [
                _flag(base, fmt_wall(bsum)),
                f"{fmt_bytes(bsum['wire_bytes_median'])} ({fmt_bytes(bsum['payload_bytes_median'])})",
                fmt_cpu(bsum["cpu_client_s_median"], bsum["cpu_server_s_median"]),
                fmt_rss(bsum["rss_client_kib_peak"], bsum["rss_server_kib_peak"]),
            ]
        else:
            row += ["-", "-", "-", "-"]
        ratios = []
        for v in others:
            res = group.get(v)
            if res is None or not res.runs:
                if res and res.skipped:
                    notes[v] = f"skipped: {res.skipped}"
                row += ["skipped" if v in notes else "not run", "-", "-", "-"]
                ratios.append("-")
                continue
            s = res.summary()
            errors = [r.error for r in res.runs if r.error]
            if errors and v not in notes:
                notes[v] = f"failed in {dataset}/{case}: {errors[0].strip().splitlines()[-1][:300]}"
            row += [
                _flag(res, fmt_wall(s)),
                fmt_bytes(s["wire_bytes_median"]),
                fmt_cpu(s["cpu_client_s_median"], s["cpu_server_s_median"]),
                fmt_rss(s["rss_client_kib_peak"], s["rss_server_kib_peak"]),
            ]
            ratios.append(
                f"{fmt_ratio(s['wall_s_median'], bsum.get('wall_s_median'))}, "
                f"{fmt_ratio(s['wire_bytes_median'], bsum.get('wire_bytes_median'))}"
            )
        row += ratios
        uni = group.get("unison")
        usum = uni.summary() if uni and uni.runs else {}
        for v in against_unison:
            res = group.get(v)
            s = res.summary() if res and res.runs else {}
            row.append(
                f"{fmt_ratio(s.get('wall_s_median'), usum.get('wall_s_median'))}, "
                f"{fmt_ratio(s.get('wire_bytes_median'), usum.get('wire_bytes_median'))}"
            )
        row.append(TARGETS.get((dataset, case), ""))
        lines.append("| " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines += [f"{v}: {reason}." for v, reason in notes.items()]
    return "\n".join(lines)


def _flag(res: CaseResult, text: str) -> str:
    """Mark failed or unverified runs so a wrong-but-fast result cannot pass unnoticed."""
    s = res.summary()
    if s["ok_runs"] == 0:
        return "FAILED"
    if s["ok_runs"] < s["runs"]:
        text += f" ({s['runs'] - s['ok_runs']} failed)"
    if not s["all_verified"]:
        text += " (NOT VERIFIED)"
    return text


def write_json(path: Path, meta: dict, results: list[CaseResult]) -> None:
    """The raw record of a whole benchmark run."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "results": [r.to_json() for r in results]}
    path.write_text(json.dumps(doc, indent=2) + "\n")


def load_json(path: Path) -> tuple[dict, list[CaseResult]]:
    """Read back what ``write_json`` wrote (to re-render or compare runs)."""
    doc = json.loads(path.read_text())
    results = []
    for item in doc["results"]:
        fields = Run.__dataclass_fields__
        runs = [Run(**{k: v for k, v in r.items() if k in fields}) for r in item["runs"]]
        results.append(CaseResult(item["dataset"], item["case"], item["variant"], runs, item.get("skipped")))
    return doc["meta"], results


if __name__ == "__main__":
    import argparse

    cli = argparse.ArgumentParser(description="re-render the table of saved runs")
    cli.add_argument("files", nargs="+", type=Path, help="results/<date>.json")
    cli.add_argument("--only", help="comma list of variants to show (default: all that ran or were skipped)")
    opts = cli.parse_args()
    for file in opts.files:
        _, saved = load_json(file)
        names = opts.only.split(",") if opts.only else list(dict.fromkeys(r.variant for r in saved))
        shown = [r for r in saved if r.variant in names]
        print(markdown_table(shown, ["rsync", *[n for n in names if n != "rsync"]]))
