"""Benchmark: generate N session records, audit them with the shipped packs, print records/s and peak memory.

    python bench/bench.py                        # 10,000 and 100,000 sessions, with history rules
    python bench/bench.py --per-record-only      # the same without the history rules (sessions only)
    python bench/bench.py --records 1000000 --per-record-only   # a million (about 270 MB of CSV)
    python bench/bench.py --records 100000 --profile             # where the audit process spends its time

With history rules, the export is the full mixed one (IV and esketamine sessions, screenings,
vitals, assessments, enrollments; about 3/4 IV sessions) audited with every shipped pack.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import datetime as dt
import multiprocessing
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.judge import pipeline  # noqa: E402
from engine.language import conditions  # noqa: E402
from engine.language.model import Pack  # noqa: E402
from engine.packs import load_packs, shipped_packs  # noqa: E402
from engine.reporters import report  # noqa: E402
from samples.generate import export, generate, write_csv  # noqa: E402

# set once in the benchmark's process; the spawned worker inherits it
WORKER_PEAK = os.environ.setdefault(
    "PROTOCOL_AUDIT_BENCH_PEAK", os.path.join(tempfile.gettempdir(), f"protocol-audit-bench-{os.getpid()}.txt"))


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def measured_worker(*args: object) -> None:
    """The engine worker, reporting its own peak memory when it ends."""
    from engine.judge.durable import worker_main

    try:
        worker_main(*args)  # type: ignore[arg-type]
    finally:
        Path(WORKER_PEAK).write_text(str(peak_mib(resource.RUSAGE_SELF)))


def make_data(n: int, folder: Path, history: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if not history:
        write_csv(generate(n, max(200, n // 12)), folder / "sessions.csv")
        return
    iv, esk = n * 3 // 4, n - n * 3 // 4
    files = export(n_sessions=iv, n_patients=max(200, iv // 12), esk_sessions=esk,
                   esk_patients=max(60, esk // 13))
    for stem, (columns, rows) in files.items():
        write_csv(rows, folder / f"{stem}.csv", columns)


def without_history(pack: Pack) -> Pack:
    kept = tuple(r for r in pack.rules
                 if not conditions.histories_of(r.when) and not conditions.histories_of(r.require))
    return dataclasses.replace(pack, rules=kept)


def bench(n: int, folder: Path, history: bool, profile: bool) -> None:
    data = folder / ("history" if history else "sessions") / str(n)
    if not data.exists():
        started = time.perf_counter()
        # made in a child process so that the peak memory below is the audit's alone
        maker = multiprocessing.get_context("spawn").Process(target=make_data, args=(n, data, history))
        maker.start()
        maker.join()
        size = sum(p.stat().st_size for p in data.iterdir()) / 1e6
        print(f"  generated {size:.1f} MB of CSV in {time.perf_counter() - started:.1f} s")
    packs = load_packs(list(shipped_packs()))
    if not history:
        packs = [without_history(p) for p in packs if p.id == "ketamine-iv"]
    files = [f"{p.stem.rstrip('s')}={p}" for p in sorted(data.glob("*.csv"))]
    profiler = cProfile.Profile() if profile else None
    cpu_before = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result, stats = pipeline.run(packs, files, worker=measured_worker)
    built = report.build(result, stats, packs, dt.datetime(2026, 11, 26, tzinfo=dt.UTC))
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    read = built.summary.records_read
    sessions = sum(s.records_read for s in stats if s.record_type == "session")
    rules = sum(len(p.rules) for p in packs)
    print(f"  {read:,} records ({sessions:,} sessions), {rules} rules, {len(built.findings):,} findings: "
          f"{elapsed:.2f} s = {read / elapsed:,.0f} records/s, {sessions / elapsed:,.0f} sessions/s")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # since cpu_before: the engine worker only
    worker_cpu = children.ru_utime + children.ru_stime - cpu_before[1].ru_utime - cpu_before[1].ru_stime
    print(f"  CPU: audit process {time.process_time() - cpu_before[0]:.2f} s, engine worker {worker_cpu:.2f} s "
          f"(the slower of the two bounds the rate)")
    worker_peak = float(Path(WORKER_PEAK).read_text()) if Path(WORKER_PEAK).exists() else float("nan")
    print(f"  peak RSS: audit process {peak_mib(resource.RUSAGE_SELF):.0f} MiB, "
          f"engine worker {worker_peak:.0f} MiB")
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(18)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, action="append", help="sessions to audit (repeatable)")
    parser.add_argument("--per-record-only", action="store_true",
                        help="sessions only, audited with the ketamine-iv rules that need no history")
    parser.add_argument("--folder", type=Path, help="where generated data is kept (default: a temp folder)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary of the audit process")
    args = parser.parse_args()
    sizes = args.records or [10_000, 100_000]
    with tempfile.TemporaryDirectory() as temp:
        folder = args.folder or Path(temp)
        for n in sizes:
            mode = "per-record rules only" if args.per_record_only else "all shipped packs, with history rules"
            print(f"{n:,} sessions, {mode}:")
            bench(n, folder, not args.per_record_only, args.profile)


if __name__ == "__main__":
    main()
