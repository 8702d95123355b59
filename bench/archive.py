"""Benchmark of the archive of audits alone: storing an audit with N findings and comparing the next
audit with it, in a new SQLite file (or a PostgreSQL database given as a URL). Prints findings/s for
each step, the archive's size, and peak memory.

    python bench/archive.py                               # 3,000 and 350,000 findings, SQLite
    python bench/archive.py --findings 1000000
    python bench/archive.py --target postgresql://user@/db?host=/run/postgresql

The audit is the shipped samples' report (json, as audited by protocol-audit) with its findings
repeated under distinct fingerprints to reach N: the rows are the archive's real rows, only more.
The second audit has the same findings but one in ten changed, so the comparison finds new,
persisting and resolved ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.archive import Archive  # noqa: E402
from engine.archive.compare import compared  # noqa: E402
from engine.results import Report  # noqa: E402

KEY = "bench-key-not-a-secret-0123456789"


def sample_report(folder: Path) -> Report:
    out = folder / "sample.json"
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "audit", "--pack", "ketamine-iv", "--pack",
                    "esketamine-rems", *map(str, sorted((ROOT / "samples").glob("*.csv"))), "--as-of",
                    "2026-10-01T00:00:00+00:00", "--key-file", str(folder / "key"), "-o", str(out)],
                   check=False, capture_output=True)
    return Report.from_json(json.loads(out.read_text()))


def scaled(report: Report, count: int, changed_every: int = 0) -> Report:
    """``report`` with ``count`` findings (its own, repeated with distinct fingerprints)."""
    base = report.findings
    made = []
    for number in range(count):
        finding = base[number % len(base)]
        tag = number if not changed_every or number % changed_every else f"changed-{number}"
        made.append(dataclasses.replace(finding, fingerprint=f"{tag:>032}"[-32:]))
    return dataclasses.replace(report, findings=tuple(made))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, action="append", help="findings per audit (repeatable)")
    parser.add_argument("--target", help="a postgresql:// URL (default: a new SQLite file per size)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "key").write_text(KEY)
        report = sample_report(folder)
        for count in args.findings or [3000, 350_000]:
            target = args.target or str(folder / f"audits-{count}.db")
            first, second = scaled(report, count), scaled(report, count, changed_every=10)
            archive = Archive(target)
            start = time.perf_counter()
            archive.store(first, "k" * 16, dt.datetime(2026, 10, 1, tzinfo=dt.UTC))
            stored = time.perf_counter() - start
            start = time.perf_counter()
            result = compared(second, archive, "k" * 16, dt.UTC)
            compare = time.perf_counter() - start
            archive.close()
            assert result.compared_to is not None
            found = result.compared_to
            size = f", archive {Path(target).stat().st_size / 2**20:.1f} MiB" if not args.target else ""
            print(f"{count:>9,} findings: stored in {stored:.2f} s ({count / stored:,.0f} findings/s), "
                  f"compared in {compare:.2f} s ({count / compare:,.0f} findings/s; {found.new:,} new, "
                  f"{found.persisting:,} persisting, {found.resolved:,} resolved){size}")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
