"""Benchmark of reading alone (no judging): the same sample year as canonical CSV, as the vendor-style
export through its source map, and as a FHIR R4 bulk export through the shipped FHIR map. Prints
records/s per form and input, FHIR resources/s, and peak memory; one core (the main process only).

    python bench/ingest.py                          # the shipped samples (about 17,600 records)
    python bench/ingest.py --folder /tmp/x10        # a bigger year written by samples/generate.py --out /tmp/x10 ...
    python bench/ingest.py --repeat 3               # best of three per form

Records are read, converted and checked for duplicate keys exactly as an audit reads them; nothing
is judged. "renamed headers" reads the canonical CSVs with every header renamed, through a map that
names them: the same cells, so its ratio is what a map costs by itself; the vendor and FHIR forms
add what their own formats cost (US dates, a flowsheet of four rows a record, XLSX, JSON and
FHIRPath). A file several map entries read (Observation.ndjson: vitals, screenings, assessments) is
parsed once; its time is shared equally among its record types, and its resources/s is for the
whole file.
"""

from __future__ import annotations

import argparse
import csv
import resource
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.inputs.builder import InputStats, Seen  # noqa: E402
from engine.inputs.maps import load_maps  # noqa: E402
from engine.inputs.sources import grouped, read_group  # noqa: E402
from engine.judge.context import PackContext  # noqa: E402
from engine.judge.pipeline import open_inputs  # noqa: E402
from engine.language.model import Rejected  # noqa: E402
from engine.packs import load_packs  # noqa: E402


def renamed(folder: Path, into: Path, context: PackContext) -> tuple[list[str], list[str]]:
    """The canonical CSVs with every header renamed ("session_start" -> "Session Start") and the map
    naming them: the same records and cells, so the difference is what a map costs by itself."""
    entries = []
    for source in sorted(folder.glob("*.csv")):
        head, rest = source.read_bytes().split(b"\n", 1)
        header = next(csv.reader([head.decode("utf-8-sig")]))
        names = [name.replace("_", " ").title() for name in header]
        (into / source.name).write_bytes(",".join(names).encode() + b"\n" + rest)
        record_type = source.stem.removesuffix("s")
        fields = context.types[record_type].fields
        entries.append({"type": record_type, "files": source.name,
                        "columns": {old: new for old, new in zip(header, names) if old in fields}})
    source_map = into / "renamed.map.yaml"
    source_map.write_text(yaml.safe_dump({"map": "renamed", "version": "1", "inputs": entries}, sort_keys=False))
    return sorted(str(p) for p in into.glob("*.csv")), [str(source_map)]


def forms(folder: Path, scratch: Path, context: PackContext) -> dict[str, tuple[list[str], list[str]]]:
    """Each form's inputs and maps."""
    canonical = sorted(str(p) for p in folder.glob("*.csv"))
    vendor = sorted(str(p) for p in (folder / "vendor").iterdir() if not p.name.endswith(".yaml"))
    fhir = sorted(str(p) for p in (folder / "fhir").glob("*.ndjson"))
    return {"canonical CSV": (canonical, []),
            "canonical CSV, renamed headers (map)": renamed(folder, scratch, context),
            "vendor (map)": (vendor, [str(folder / "vendor" / "acme-ehr.map.yaml")]),
            "FHIR R4 (map)": (fhir, [str(ROOT / "maps" / "fhir-r4.yaml")])}


def read_form(context: PackContext, files: list[str], map_refs: list[str]) -> list[tuple[InputStats, float]]:
    maps = load_maps(map_refs, context.types)
    seen = Seen()
    timed = []
    start = time.perf_counter()
    bindings = open_inputs(files, context.types, maps, context.needed)
    timed.append((InputStats("(opening: every header read, columns checked)", None), time.perf_counter() - start))
    for group in grouped(bindings):
        stats = [InputStats(binding.path, binding.type) for binding in group]
        start = time.perf_counter()
        for item in read_group(group, context.types, context.tz, seen, stats, context.privacy):
            if not isinstance(item, Rejected):
                context.derive(item)
        seconds = time.perf_counter() - start
        timed += [(each, seconds / len(stats)) for each in stats]  # a file read once for several types
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=ROOT / "samples",
                        help="a folder written by samples/generate.py (default: the shipped samples)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per form; the best is shown")
    args = parser.parse_args()
    context = PackContext(load_packs(["ketamine-iv", "esketamine-rems"]))
    rates: dict[str, float] = {}
    scratch = tempfile.TemporaryDirectory()
    for form, (files, maps) in forms(args.folder, Path(scratch.name), context).items():
        best: list[tuple[InputStats, float]] | None = None
        for _ in range(args.repeat):
            timed = read_form(context, files, maps)
            if best is None or sum(t for _, t in timed) < sum(t for _, t in best):
                best = timed
        assert best is not None
        total = sum(t for _, t in best)
        records = sum(s.records_read for s, _ in best)
        rates[form] = records / total
        print(f"{form}: {records:,} records in {total:.2f} s = {records / total:,.0f} records/s")
        for stats, seconds in best:
            shared = sum(1 for other, _ in best if other.path == stats.path)
            resources = (stats.records_read + (stats.skipped or 0) + (stats.filtered or 0))
            extra = (f", {resources / (seconds * shared):,.0f} resources/s for the file"
                     if stats.skipped is not None else "")
            rows = f" ({stats.rows_read:,} rows)" if stats.rows_read is not None else ""
            if stats.path.startswith("("):
                print(f"  {stats.path} in {seconds:.2f} s")
                continue
            print(f"  {Path(stats.path).name:<34} {stats.record_type or '-':<11} {stats.records_read:>8,}{rows} "
                  f"in {seconds:6.2f} s = {stats.records_read / seconds if seconds else 0:>9,.0f} records/s{extra}")
    base = rates["canonical CSV"]
    for form, rate in rates.items():
        if form != "canonical CSV":
            print(f"{form}: {base / rate:.2f}x the time of canonical CSV per record")
    scratch.cleanup()
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
