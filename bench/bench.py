"""Benchmark: generate N session records, audit them with a shipped pack, print records/s and peak memory.

    python bench/bench.py                     # 10,000 and 100,000 records
    python bench/bench.py --records 1000000   # a million (about 270 MB of CSV in a temp folder)
    python bench/bench.py --records 100000 --profile   # where the time goes
"""

from __future__ import annotations

import argparse
import cProfile
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

from engine import pipeline, report  # noqa: E402
from engine.packs import load_packs  # noqa: E402
from samples.generate import generate, write_csv  # noqa: E402

# set once in the benchmark's process; the spawned worker inherits it
WORKER_PEAK = os.environ.setdefault(
    "PROTOCOL_AUDIT_BENCH_PEAK", os.path.join(tempfile.gettempdir(), f"protocol-audit-bench-{os.getpid()}.txt"))


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def measured_worker(*args: object) -> None:
    """The engine worker, reporting its own peak memory when it ends."""
    from engine.evaluator import worker_main

    try:
        worker_main(*args)  # type: ignore[arg-type]
    finally:
        Path(WORKER_PEAK).write_text(str(peak_mib(resource.RUSAGE_SELF)))


def make_data(n: int, path: Path) -> None:
    write_csv(generate(n, max(200, n // 12)), path)


def bench(n: int, pack: str, folder: Path, profile: bool) -> None:
    data = folder / f"sessions_{n}.csv"
    if not data.exists():
        started = time.perf_counter()
        # generated in a child process so that the peak memory below is the audit's alone
        maker = multiprocessing.get_context("spawn").Process(target=make_data, args=(n, data))
        maker.start()
        maker.join()
        print(f"  generated {data.name} ({data.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - started:.1f} s")
    packs = load_packs([pack])
    profiler = cProfile.Profile() if profile else None
    cpu_before = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    result, stats = pipeline.run(packs, [f"session={data}"], worker=measured_worker)
    built = report.build(result, stats, packs, dt.datetime(2026, 11, 26, tzinfo=dt.UTC))
    if profiler:
        profiler.disable()
    elapsed = time.perf_counter() - started
    read = built["summary"]["records_read"]
    print(f"  {read:,} records, {len(packs[0].rules)} rules, {len(built['findings']):,} findings: "
          f"{elapsed:.2f} s = {read / elapsed:,.0f} records/s")
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
    parser.add_argument("--records", type=int, action="append", help="records to audit (repeatable)")
    parser.add_argument("--pack", default="ketamine-iv")
    parser.add_argument("--folder", type=Path, help="where generated data is kept (default: a temp folder)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile summary of the audit process")
    args = parser.parse_args()
    sizes = args.records or [10_000, 100_000]
    with tempfile.TemporaryDirectory() as temp:
        folder = args.folder or Path(temp)
        folder.mkdir(parents=True, exist_ok=True)
        for n in sizes:
            print(f"{n:,} records, pack {args.pack}:")
            bench(n, args.pack, folder, args.profile)


if __name__ == "__main__":
    main()
