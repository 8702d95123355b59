"""Benchmark: render a report of about 100,000 findings in every format; print time, size and peak memory.

    python bench/render.py                      # about 100,000 findings
    python bench/render.py --findings 10000     # about 10,000
    python bench/render.py --browser            # also open the HTML in headless Chromium (needs playwright)

The report comes from a real audit (generated sessions, the ketamine-iv rules that need no
history, about 0.3 findings per session), is pickled once, and each format is rendered in a
fresh spawned process, so each peak memory figure is that format's alone: the loaded report
plus whatever its renderer holds. The audit's own cost is measured by bench/bench.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing
import os
import pickle
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import without_history  # noqa: E402  (bench/bench.py, beside this file)
from engine.judge import pipeline  # noqa: E402
from engine.packs import load_packs, shipped_packs  # noqa: E402
from engine.privacy import Pseudonymiser  # noqa: E402
from engine.reporters import report  # noqa: E402
from engine.results import Report  # noqa: E402
from samples.generate import generate, write_csv  # noqa: E402

FINDINGS_PER_SESSION = 0.29  # of the generated sessions with the per-record ketamine-iv rules (measured)
FORMATS = ("json", "csv", "md", "html")


def rss_mib() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build_report(sessions: int, folder: Path) -> Report:
    data = folder / "sessions.csv"
    write_csv(generate(sessions, max(200, sessions // 12)), data)
    packs = [without_history(p) for p in load_packs(list(shipped_packs())) if p.id == "ketamine-iv"]
    result, stats = pipeline.run(packs, [f"session={data}"], pseudonymise=Pseudonymiser(b"bench-key", "bench"))
    return report.build(result, stats, packs, dt.datetime(2026, 11, 26, tzinfo=dt.UTC))


def render_one(fmt: str, pickled: Path, out: Path, results: Any) -> None:
    """In a fresh process: load the report, render it to ``out``, send back the measurements."""
    from engine import reporters

    with open(pickled, "rb") as handle:
        loaded = pickle.load(handle)
    loaded_mib = rss_mib()
    started = time.perf_counter()
    with open(out, "w", encoding="utf-8", newline="") as handle:
        reporters.get(fmt)(loaded, handle)
    elapsed = time.perf_counter() - started
    results.put((elapsed, loaded_mib, peak_mib()))


def open_in_browser(html: Path) -> None:
    """Page load, then 'show all' after filtering, in headless Chromium (as in tests/test_browser.py)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("  browser: playwright is not installed, skipped")
        return
    chromium = "/usr/bin/chromium"
    if not os.access(chromium, os.X_OK):
        print("  browser: no /usr/bin/chromium, skipped")
        return
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        started = time.perf_counter()
        page.goto(html.as_uri(), wait_until="load", timeout=600_000)
        loaded = time.perf_counter() - started
        timings = page.evaluate("""() => {
            const time = (f) => { const t = performance.now(); f(); document.body.offsetHeight;
                                  return (performance.now() - t) / 1000; };
            const rule = document.getElementById('filter-rule');
            const pick = (value) => { rule.value = value; rule.dispatchEvent(new Event('change')); };
            const sort = () => document.querySelector('#findings th:nth-child(6) button').click();
            return {filter: time(() => pick(rule.options[1].value)), unfilter: time(() => pick('')),
                    sort: time(sort)};
        }""")
        print(f"  browser: page load {loaded:.2f} s; filter by a rule {timings['filter']:.2f} s, "
              f"clear the filter {timings['unfilter']:.2f} s, sort by time {timings['sort']:.2f} s")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", type=int, default=100_000, help="about how many findings (default 100,000)")
    parser.add_argument("--browser", action="store_true", help="also time the HTML report in headless Chromium")
    args = parser.parse_args()
    sessions = int(args.findings / FINDINGS_PER_SESSION)
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp)
        started = time.perf_counter()
        built = build_report(sessions, folder)
        print(f"audited {sessions:,} sessions in {time.perf_counter() - started:.1f} s: "
              f"{len(built.findings):,} findings")
        pickled = folder / "report.pickle"
        with open(pickled, "wb") as handle:
            pickle.dump(built, handle, protocol=pickle.HIGHEST_PROTOCOL)
        del built
        for fmt in FORMATS:
            out = folder / f"report.{fmt}"
            results = context.Queue()
            child = context.Process(target=render_one, args=(fmt, pickled, out, results))
            child.start()
            elapsed, loaded_mib, peak = results.get()
            child.join()
            size = out.stat().st_size / 1e6
            print(f"  {fmt:<4}: {elapsed:6.2f} s, {size:7.1f} MB written; peak RSS {peak:5.0f} MiB "
                  f"(the loaded report alone {loaded_mib:.0f} MiB)")
        if args.browser:
            open_in_browser(folder / "report.html")


if __name__ == "__main__":
    main()
