"""Benchmark: reading a clinic's XLSX session export with openpyxl and with python-calamine.

    python bench/xlsx_readers.py                  # 100,000 rows, every reader, then the cell semantics
    python bench/xlsx_readers.py --rows 20000     # a short run
    python bench/xlsx_readers.py --cells          # only the cell semantics table

The sheet is written with openpyxl's write-only mode: 15 columns like a session export (ids as
text, datetimes stored as real Excel datetimes, a datetime stored as text, numbers, Y/N text,
blanks). Each reader runs in a child process of its own that opens the workbook and reads every
row; the time is measured in the child (open + read, the interpreter's start excluded) and the
peak RSS is the child's ru_maxrss (os.wait4), which counts the Rust allocations of calamine that
tracemalloc cannot see. A child that only imports both libraries gives the baseline;
xlsx_reader is engine/inputs/xlsx_reader.py (openpyxl's worksheet parser, typed cells, limits).

The cell semantics part writes one small workbook holding a date-formatted cell, a raw serial
with a date format, text, an integral number, booleans, error cells, formula cells with a cached
value (openpyxl writes formulas without one, so the value is patched into the sheet XML) and a
merged range, and prints what each library returns for each.
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

SHEET = "Sessions"
HEADER = ["CSN", "MRN", "Admin Start", "Admin End", "Start (text)", "Dose", "Dose Unit", "Route",
          "BP Pre", "HR Pre", "SpO2 Min", "Escort", "Consent", "Weight kg", "Note"]
READERS = ("baseline", "openpyxl", "xlsx_reader", "calamine-iter", "calamine-to_python")


def write_export(path: Path, rows: int) -> None:
    """A session export of ``rows`` data rows, written with openpyxl's write-only mode."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    rng = random.Random(20260101)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet(SHEET)
    ws.append(HEADER)
    start = datetime.datetime(2025, 1, 1, 7, 0)
    fmt = WriteOnlyCell(ws, value=start)
    fmt.number_format = "yyyy-mm-dd hh:mm"
    for i in range(rows):
        begin = start + datetime.timedelta(minutes=37 * i)
        end = begin + datetime.timedelta(minutes=40 + rng.randrange(30))
        begin_cell = WriteOnlyCell(ws, value=begin)
        begin_cell.number_format = "yyyy-mm-dd hh:mm"
        end_cell = WriteOnlyCell(ws, value=end)
        end_cell.number_format = "yyyy-mm-dd hh:mm"
        ws.append([
            f"CSN{1000000 + i}", f"MRN{rng.randrange(10**6):06d}", begin_cell, end_cell,
            begin.strftime("%m/%d/%Y %I:%M %p"), rng.choice([35, 40, 52.5, 70]), "mg",
            rng.choice(["Intravenous", "Intranasal"]), f"{rng.randrange(100, 160)}/{rng.randrange(60, 95)}",
            rng.randrange(55, 110), rng.randrange(88, 100), rng.choice(["Y", "N"]),
            rng.choice(["Y", "N", None]), round(rng.uniform(45, 120), 1), None if i % 3 else "tolerated well",
        ])
    wb.save(path)


def read_all(reader: str, path: str) -> int:
    """Read every row of the export with ``reader``; the number of rows read."""
    count = 0
    if reader == "baseline":
        import openpyxl  # noqa: F401
        import python_calamine  # noqa: F401
    elif reader == "openpyxl":
        from openpyxl import load_workbook
        wb = load_workbook(path, read_only=True, data_only=True)
        for _ in wb[SHEET].iter_rows(values_only=True):
            count += 1
        wb.close()
    elif reader == "xlsx_reader":  # this project's reader: openpyxl's parser, typed cells, limits
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from engine.inputs.xlsx_reader import open_sheet
        for _ in open_sheet(path, SHEET).rows():
            count += 1
        count += 1  # the header, as the other readers count it
    elif reader == "calamine-iter":
        from python_calamine import CalamineWorkbook
        with CalamineWorkbook.from_path(path) as cwb:
            for _ in cwb.get_sheet_by_name(SHEET).iter_rows():
                count += 1
    elif reader == "calamine-to_python":
        from python_calamine import CalamineWorkbook
        with CalamineWorkbook.from_path(path) as cwb:
            count = len(cwb.get_sheet_by_name(SHEET).to_python())
    else:
        raise SystemExit(f"unknown reader {reader!r}")
    return count


def run_child(reader: str, path: Path) -> tuple[float, float, int]:
    """Seconds (measured in the child), peak RSS in MiB and rows read, for one reader in its own process."""
    child = subprocess.Popen([sys.executable, __file__, "--read", reader, str(path)], stdout=subprocess.PIPE)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{reader} failed")
    seconds, rows = out.split()
    return float(seconds), usage.ru_maxrss / 1024, int(rows)


def semantics_workbook(path: Path) -> list[str]:
    """A small workbook of awkward cells; the label of each column."""
    from openpyxl import Workbook

    cells: list[tuple[str, Any, str | None]] = [
        ("date, date format", datetime.date(2025, 1, 1), "yyyy-mm-dd"),
        ("datetime 08:30:15", datetime.datetime(2025, 1, 1, 8, 30, 15), "yyyy-mm-dd hh:mm:ss"),
        ("midnight, datetime format", datetime.datetime(2025, 1, 1), "yyyy-mm-dd hh:mm"),
        ("serial 45658.5, datetime format", 45658.5, "yyyy-mm-dd hh:mm"),
        ("serial 60, date format", 60, "yyyy-mm-dd"),
        ("time 08:30", datetime.time(8, 30), "hh:mm"),
        ("text '1.0'", "1.0", None),
        ("number 1", 1, None),
        ("number 1.5", 1.5, None),
        ("TRUE", True, None),
        ("#N/A error", "#N/A", None),
        ("#DIV/0! error", "#DIV/0!", None),
        ("formula =1+1 cached 2", "=1+1", None),
        ("merged B2:B3 top", "m", None),
    ]
    wb = Workbook()
    ws = wb.active
    ws.title = SHEET
    for column, (label, value, number_format) in enumerate(cells, start=1):
        ws.cell(1, column, label)
        cell = ws.cell(2, column, value)
        if number_format:
            cell.number_format = number_format
    last = len(cells)
    ws.cell(1, last + 1, "merged (row 3, under)")
    ws.merge_cells(start_row=2, end_row=3, start_column=last, end_column=last)
    raw = path.with_suffix(".raw.xlsx")
    wb.save(raw)
    with zipfile.ZipFile(raw) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<f>1+1</f><v />", b"<f>1+1</f><v>2</v>")
            zout.writestr(info, data)
    raw.unlink()
    return [label for label, _, _ in cells] + ["merged, row 3 under the top"]


def print_semantics(folder: Path) -> None:
    from openpyxl import load_workbook
    from python_calamine import CalamineWorkbook

    path = folder / "cells.xlsx"
    labels = semantics_workbook(path)
    wb = load_workbook(path, read_only=True, data_only=True)
    opx_rows = list(wb[SHEET].iter_rows(min_row=2))
    wb.close()
    opx = [(c.value, c.data_type) for c in opx_rows[0]]
    with CalamineWorkbook.from_path(path) as cwb:
        cal = cwb.get_sheet_by_name(SHEET).to_python()
    print(f"\n{'cell':34} {'openpyxl (value, data_type)':44} python-calamine")
    for i, label in enumerate(labels):
        if i == len(labels) - 1:  # the cell under the merged range's top
            o: Any = (opx_rows[1][len(labels) - 2].value, "")
            c: Any = cal[2][len(labels) - 2] if len(cal) > 2 else "(no row)"
        else:
            o, c = opx[i], cal[1][i]
        print(f"{label:34} {o!r:44} {c!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--cells", action="store_true", help="only the cell semantics table")
    parser.add_argument("--read", nargs=2, metavar=("READER", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        started = time.perf_counter()
        rows = read_all(*args.read)
        print(f"{time.perf_counter() - started:.3f} {rows}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.cells:
            path = folder / "export.xlsx"
            started = time.perf_counter()
            write_export(path, args.rows)
            print(f"wrote {args.rows:,} rows x {len(HEADER)} columns in {time.perf_counter() - started:.1f} s, "
                  f"{path.stat().st_size / 2**20:.1f} MiB on disk")
            for reader in READERS:
                seconds, peak, rows = run_child(reader, path)
                rate = f"{rows / seconds:,.0f} rows/s" if rows else "-"
                print(f"  {reader:20} {seconds:6.2f} s  {rate:>16}  peak RSS {peak:6.0f} MiB")
        print_semantics(folder)


if __name__ == "__main__":
    main()
