"""Benchmark: two input shapes that used to take quadratic time, audited as a user would run them.

    python bench/hostile_shapes.py                                # 100,000 columns; 25k, 50k, 100k tied records
    python bench/hostile_shapes.py --columns 20000 --tied 5000    # a short run
    python bench/hostile_shapes.py --tied 0                       # the wide header only

(a) wide: a sessions CSV whose header has N columns (the ketamine-iv session fields, then filler
    columns) and a few rows, audited with the ketamine-iv pack. The header check is per column.
(b) tied: one patient with N sessions all at the same moment, audited with a one-rule pack whose
    rule counts the patient's other sessions in a window (a history ``count``): every record's
    window holds all the others.

Each case runs ``protocol-audit audit`` in its own process; the time is wall-clock for that
process, and the peak RSS is the largest of the audit process and its engine worker (os.wait4).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "sessions.csv"

COUNT_PACK = """\
pack: tied
version: "1"
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields: {session_id: string, patient_id: string, session_start: datetime, route: {type: enum, values: [IV, IN]}}
rules:
  - id: COUNT-01
    title: At most 2 other sessions in the 6 days before
    severity: major
    for: session
    require:
      count: {of: session, where: {route: IV}, within: {before: 6d}, at_most: 2}
"""


def write_wide(path: Path, columns: int, rows: int) -> None:
    """The first ``rows`` sample sessions, with filler columns up to ``columns`` in all."""
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        body = [next(reader) for _ in range(rows)]
    filler = max(0, columns - len(header))
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header + [f"x{n:x}" for n in range(filler)])  # short names: the line stays under 1 MiB
        for row in body:
            writer.writerow(row + [""] * filler)


def write_tied(path: Path, records: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        out.write("session_id,patient_id,session_start,route\n")
        out.writelines(f"S-{n:07d},P-1,2026-03-02T09:00:00Z,IV\n" for n in range(records))


def run_audit(args: list[str]) -> tuple[float, float, int, str]:
    """Seconds, peak RSS in MiB (the audit process and its children), exit code, and stderr's last line."""
    env = dict(os.environ, PROTOCOL_AUDIT_KEY="hostile-shapes-benchmark-key")
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "audit", *args],
                                 stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=ROOT)
        _, status, usage = os.wait4(child.pid, 0)
        elapsed = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode("utf-8", "replace").strip().splitlines()
    return elapsed, usage.ru_maxrss / 1024, child.returncode, lines[-1] if lines else ""


def report(label: str, records: int, result: tuple[float, float, int, str]) -> None:
    elapsed, peak, code, last = result
    print(f"  {label}: {records:,} records, {elapsed:.2f} s = {records / elapsed:,.0f} records/s, "
          f"peak RSS {peak:.0f} MiB, exit {code}")
    if code not in (0, 1):  # 1 is "findings at or above --fail-on": a normal audit
        print(f"    failed: {last}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--columns", type=int, action="append",
                        help="columns in the wide header (repeatable; default 100,000; 0 skips the shape)")
    parser.add_argument("--rows", type=int, default=5, help="data rows under the wide header (default 5)")
    parser.add_argument("--tied", type=int, action="append",
                        help="records of one patient at one moment (repeatable; default 25k, 50k, 100k; "
                             "0 skips the shape)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hostile-shapes-") as temp:
        folder = Path(temp)
        for columns in [c for c in args.columns or [100_000] if c > 0]:
            path = folder / "wide" / str(columns) / "sessions.csv"
            path.parent.mkdir(parents=True)
            write_wide(path, columns, args.rows)
            print(f"wide header, {columns:,} columns ({path.stat().st_size / 1e6:.1f} MB), ketamine-iv:")
            report("audit", args.rows, run_audit(["--pack", "ketamine-iv", str(path)]))
        pack = folder / "tied.yaml"
        pack.write_text(COUNT_PACK, encoding="utf-8")
        for records in [n for n in args.tied or [25_000, 50_000, 100_000] if n > 0]:
            path = folder / "tied" / str(records) / "sessions.csv"
            path.parent.mkdir(parents=True)
            write_tied(path, records)
            print(f"one patient, {records:,} sessions at the same moment, a history count rule:")
            report("audit", records, run_audit(["--pack", str(pack), str(path)]))


if __name__ == "__main__":
    main()
