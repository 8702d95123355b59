"""The performance goals in one command: the peer bench (protocol-audit beside a plain Python loop
and zen-engine on the same 12 rules and data, counts checked equal) and the shipped packs on the
samples at 10x, measured in one run; prints each figure against its goal.

    python bench/goals.py                      # peer bench at 200,000 records, samples at 10x
    python bench/goals.py --records 1000000    # the peer bench at a million
    python bench/goals.py --scale 50           # the samples at 50x (linearity)

Needs the peer bench beside the project (../shared/peer-bench/) and its venv with zen-engine
(/tmp/bench-venv, see that folder's README; BENCH_PY names another), and protocol-audit on PATH.
Goals (issue 13): protocol-audit >= 0.7x the loop and >= 2x zen on the peer bench; the shipped
packs on the samples at 10x >= 0.35x the loop's rate from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_BENCH = ROOT.parent / "shared" / "peer-bench"


def peer_bench(records: int, reps: int) -> dict[str, dict[str, float]]:
    """Each peer's median records/s and peak RSS from run.sh, by peer name."""
    env = {**os.environ, "BENCH_REPS": str(reps)}
    done = subprocess.run([str(PEER_BENCH / "run.sh"), str(records), "python_loop", "zen", "protocol-audit"],
                          env=env, capture_output=True, text=True, check=True)
    runs = next(line.split()[-1] for line in done.stdout.splitlines() if "/runs-" in line and "records;" in line)
    table = subprocess.run([sys.executable, str(PEER_BENCH / "summarize.py"), runs, "--json"], capture_output=True,
                           text=True, check=True)
    rows = {row["peer"]: row for row in json.loads(table.stdout)}
    if any(row.get("agree") is False for row in rows.values()):
        raise SystemExit(f"the peers' counts differ (see {runs}): no figure means anything")
    return rows


def samples(scale: int, folder: Path) -> tuple[int, float, float]:
    """(records read, seconds, peak RSS MiB of the tree) of the shipped packs on the samples at ``scale``x."""
    subprocess.run([sys.executable, str(ROOT / "samples" / "generate.py"), "--sessions", str(2400 * scale),
                    "--patients", str(200 * scale), "--esk-sessions", str(800 * scale), "--esk-patients",
                    str(60 * scale), "--no-forms", "--out", str(folder)], check=True, capture_output=True)
    files = sorted(str(p) for p in folder.glob("*.csv"))
    out = folder / "report.json"
    start = time.perf_counter()
    run = subprocess.run(["/usr/bin/time", "-v", "protocol-audit", "audit", "--pack", "ketamine-iv", "--pack",
                          "esketamine-rems", *files, "-o", str(out)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode not in (0, 1):
        raise SystemExit(f"the audit failed: {run.stderr[-2000:]}")
    peak = next((int(line.split()[-1]) / 1024 for line in run.stderr.splitlines()
                 if "Maximum resident set size" in line), float("nan"))
    return json.loads(out.read_text())["summary"]["records_read"], seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=200_000, help="peer bench records (default 200,000)")
    parser.add_argument("--reps", type=int, default=1, help="peer bench repetitions (default 1)")
    parser.add_argument("--scale", type=int, default=10, help="the samples at this many times (default 10)")
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{platform.platform()}")
    peers = peer_bench(args.records, args.reps)
    loop, zen, product = (peers[name]["rate"] for name in ("python_loop", "zen", "protocol-audit"))
    print(f"peer bench, {args.records:,} records: python_loop {loop:,.0f} rec/s, zen {zen:,.0f}, "
          f"protocol-audit {product:,.0f} (peak RSS of its process tree {peers['protocol-audit']['rss']:.0f} MiB)")
    with tempfile.TemporaryDirectory() as scratch:
        read, seconds, peak = samples(args.scale, Path(scratch))
    rate = read / seconds
    print(f"samples at {args.scale}x: {read:,} records in {seconds:.1f} s = {rate:,.0f} rec/s "
          f"(peak RSS {peak:.0f} MiB, its largest process)")
    for what, got, goal in (("protocol-audit / python_loop", product / loop, 0.7),
                            ("protocol-audit / zen", product / zen, 2.0),
                            (f"samples {args.scale}x / python_loop", rate / loop, 0.35)):
        print(f"  {what:<32} {got:6.3f}  goal >= {goal:<5} {'met' if got >= goal else 'NOT MET'}")


if __name__ == "__main__":
    main()
