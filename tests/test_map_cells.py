"""Source maps, cell by cell (SPEC 8): each option of a map entry on a small export, read through
the reader API (bind + read_binding) into typed records or rejections naming the column."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from openpyxl import Workbook

from cli import main
from engine.inputs.builder import InputStats, Seen
from engine.inputs.maps import load_map_bytes
from engine.inputs.sources import bind, read_binding
from engine.judge.context import PackContext
from engine.language.model import Record, Rejected
from engine.packs import load_pack_bytes
from tests.helpers import write

PACK = """\
pack: cells
version: "1"
title: cell pack
timezone: UTC
records:
  session:
    key: session_id
    patient: patient_id
    time: session_start
    fields:
      session_id: string
      patient_id: string
      session_start: datetime
      session_end: datetime
      signed_on: date
      dose_mg: {type: number, unit: mg}
      devices: integer
      sbp: integer
      dbp: integer
      route: {type: enum, values: [IV, IN]}
      escort_present: boolean
      note: string
rules:
  - id: DOSE-01
    title: dose at most 100 mg
    severity: major
    for: session
    require: {dose_mg: {at_most: 100}}
"""
UTC = dt.UTC


def map_text(options: str = "", columns: str = "", files: str = "x*") -> str:
    """A map of one session entry reading ``files``; ``options`` and ``columns`` as YAML lines."""
    text = f'map: t\nversion: "1"\ninputs:\n  - type: session\n    files: "{files}"\n'
    text += textwrap.indent(textwrap.dedent(options), "    ")
    if columns:
        text += "    columns:\n" + textwrap.indent(textwrap.dedent(columns), "      ")
    return text


def read_mapped(tmp_path: Path, source_map: str, name: str, content: str | bytes,
                pack: str = PACK) -> tuple[list[Record | Rejected], InputStats]:
    """Every record or rejection of one file read through one map under ``pack``."""
    context = PackContext([load_pack_bytes(pack.encode(), "pack.yaml")])
    loaded = load_map_bytes(source_map.encode(), "map.yaml", context.types)
    path = write(tmp_path, name, content) if not (tmp_path / name).exists() else tmp_path / name
    bindings = bind([str(path)], context.types, [loaded])
    assert len(bindings) == 1 and bindings[0].entry is not None, bindings
    stats = InputStats(str(path), bindings[0].type)
    items = list(read_binding(bindings[0], context.types, context.tz, Seen(), stats))
    return items, stats


def values(items: list[Record | Rejected]) -> list[dict[str, Any] | str]:
    """Each record's values, or a rejection's reason."""
    return [item.reason if isinstance(item, Rejected) else item.values for item in items]


def csv_rows(*rows: str, header: str = "session_id,patient_id,session_start") -> str:
    return "\n".join([header, *rows]) + "\n"


def one_row(column: str, cell: str, sep: str = ",") -> str:
    """A CSV of one session A1 whose fourth column, ``column``, holds ``cell``."""
    return csv_rows(sep.join(["A1", "P1", START, cell]), header=sep.join(["session_id", "patient_id", "session_start",
                                                                         column]))


START = "2026-03-02T10:00:00"
T0 = dt.datetime(2026, 3, 2, 10, tzinfo=UTC)


def test_cp1252_export_with_a_semicolon_delimiter(tmp_path: Path) -> None:
    note = "Zoë – café, 5 €"
    data = f"CSN;MRN;Start;Note\nA1;P1;{START};{note}\n".encode("cp1252")
    items, _ = read_mapped(tmp_path, map_text('encoding: cp1252\ndelimiter: ";"\n',
                                              "session_id: CSN\npatient_id: MRN\nsession_start: Start\nnote: Note\n"),
                           "x.csv", data)
    assert values(items) == [{"session_id": "A1", "patient_id": "P1", "session_start": T0, "note": note}]


@pytest.mark.parametrize("options, cell, expected", [
    ('decimal: ","\nthousands: "."\n', "1.234,5", 1234.5),
    ('decimal: ","\nthousands: "."\n', "12,5 mg", 12.5),
    ('decimal: ","\n', "1234,5", 1234.5),
    ('thousands: ","\n', "1,234.5", 1234.5),
    ('decimal: ","\n', "1.5", 'dose_mg (column "Dose"): "1.5" is not a number (the decimal separator is ",")'),
    ('decimal: ","\nthousands: "."\n', "1.5",
     'dose_mg (column "Dose"): "1.5" is not a number (the decimal separator is ",")'),
    ('decimal: ","\nthousands: "."\n', "-12.345.678,9", -12345678.9),
    ('thousands: ","\n', "1,5", 'dose_mg (column "Dose"): "1,5" is not a number (the thousands separator "," '
                                 'groups three digits)'),
], ids=["grouped", "with-unit", "decimal-comma", "thousands-comma", "dot-rejected", "dot-rejected-with-thousands",
        "several-groups", "short-group"])
def test_decimal_and_thousands(tmp_path: Path, options: str, cell: str, expected: float | str) -> None:
    items, _ = read_mapped(tmp_path, map_text(options + 'delimiter: ";"\n', "dose_mg: {column: Dose, unit: mg}\n"),
                           "x.csv", one_row("Dose", cell, ";"))
    got = values(items)[0]
    assert got == expected if isinstance(expected, str) else got["dose_mg"] == expected  # type: ignore[index]


FORMATS = ["%d/%m/%Y %H:%M", "%m/%d/%Y %I:%M %p"]


@pytest.mark.parametrize("cell, expected", [
    ("02/03/2026 14:05", dt.datetime(2026, 3, 2, 14, 5, tzinfo=UTC)),  # the first format
    ("03/04/2026 10:00", dt.datetime(2026, 4, 3, 10, 0, tzinfo=UTC)),  # both could: the first listed wins
    ("03/02/2026 02:05 PM", dt.datetime(2026, 3, 2, 14, 5, tzinfo=UTC)),  # only the second
    ("2026-03-02T14:05:00", dt.datetime(2026, 3, 2, 14, 5, tzinfo=UTC)),  # ISO 8601 always
    ("2026-03-02 14:05+01:00", dt.datetime(2026, 3, 2, 13, 5, tzinfo=UTC)),
], ids=["first", "first-wins", "second", "iso", "iso-offset"])
def test_datetime_formats_are_tried_in_order(tmp_path: Path, cell: str, expected: dt.datetime) -> None:
    items, _ = read_mapped(tmp_path, map_text(f"datetime_formats: {FORMATS!r}\n".replace("'", '"')),
                           "x.csv", csv_rows(f'A1,P1,"{cell}"'))
    assert values(items)[0]["session_start"] == expected  # type: ignore[index]


def test_a_datetime_no_format_reads_is_rejected_naming_the_formats(tmp_path: Path) -> None:
    items, stats = read_mapped(tmp_path, map_text(f"datetime_formats: {FORMATS!r}\n".replace("'", '"'),
                                                  "session_start: Start\n"),
                               "x.csv", csv_rows("A1,P1,March 2", header="session_id,patient_id,Start"))
    tried = "ISO 8601" + "".join(f', "{fmt}"' for fmt in FORMATS)
    assert values(items) == [f'session_start (column "Start"): "March 2" is not a datetime (tried {tried})']
    assert (stats.records_read, stats.records_rejected) == (1, 1)


def test_date_formats_and_iso_dates(tmp_path: Path) -> None:
    items, _ = read_mapped(tmp_path, map_text('date_formats: ["%d.%m.%Y"]\n'), "x.csv",
                           csv_rows(f"A1,P1,{START},02.03.2026", f"A2,P1,{START},2026-03-04", f"A3,P1,{START},3/4/26",
                                    header="session_id,patient_id,session_start,signed_on"))
    got = values(items)
    assert [got[0]["signed_on"], got[1]["signed_on"]] == [dt.date(2026, 3, 2), dt.date(2026, 3, 4)]  # type: ignore[index]
    assert got[2] == 'signed_on: "3/4/26" is not a date (tried ISO 8601, "%d.%m.%Y")'


def test_timezone_places_naive_times_and_elapsed_time_is_exact_across_dst(tmp_path: Path) -> None:
    # 2026-03-08 is the day US clocks go from 02:00 to 03:00: 01:30 to 03:30 on the wall is one hour
    items, _ = read_mapped(tmp_path, map_text("timezone: America/Chicago\n"), "x.csv",
                           csv_rows("A1,P1,2026-03-02 10:00,2026-03-02 11:00+00:00",
                                    "A2,P1,2026-03-08 01:30,2026-03-08 03:30",
                                    "A3,P1,2026-11-01 01:30,2026-03-08 02:30",  # in the fold; in the gap
                                    header="session_id,patient_id,session_start,session_end"))
    zone = ZoneInfo("America/Chicago")
    first, second, third = values(items)
    for got, wall in ((third["session_start"], dt.datetime(2026, 11, 1, 1, 30)),  # type: ignore[index]
                      (third["session_end"], dt.datetime(2026, 3, 8, 2, 30))):  # type: ignore[index]
        assert got.utcoffset() == wall.replace(tzinfo=zone, fold=0).utcoffset()  # the first occurrence
    assert first["session_start"] == dt.datetime(2026, 3, 2, 10, tzinfo=zone)  # type: ignore[index]
    assert first["session_start"].astimezone(UTC) == dt.datetime(2026, 3, 2, 16, tzinfo=UTC)  # type: ignore[index]
    assert first["session_end"] == dt.datetime(2026, 3, 2, 11, tzinfo=UTC)  # an offset in the text wins
    elapsed = second["session_end"] - second["session_start"]  # type: ignore[index]
    expected = (dt.datetime(2026, 3, 8, 3, 30, tzinfo=zone).astimezone(UTC)
                - dt.datetime(2026, 3, 8, 1, 30, tzinfo=zone).astimezone(UTC))
    assert elapsed == expected == dt.timedelta(hours=1)


@pytest.mark.parametrize("cell, expected", [("Y", True), ("x", True), ("yes", True), ("N", False), ("0", False),
                                            ("maybe", 'escort_present: "maybe" is not a boolean')])
def test_true_and_false_values_add_to_the_usual_spellings(tmp_path: Path, cell: str, expected: bool | str) -> None:
    items, _ = read_mapped(tmp_path, map_text("true_values: [Y, X]\nfalse_values: [N]\n"), "x.csv",
                           one_row("escort_present", cell))
    got = values(items)[0]
    assert got == expected if isinstance(expected, str) else got["escort_present"] is expected  # type: ignore[index]


def test_missing_markers(tmp_path: Path) -> None:
    items, stats = read_mapped(tmp_path, map_text('missing: ["NULL", "--"]\n'), "x.csv", csv_rows(
        f"A1,P1,{START},NULL", f"A2,P1,{START},--", f"A3,P1,{START},", f"A4,P1,{START},n/a", f"NULL,P1,{START},5",
        header="session_id,patient_id,session_start,dose_mg"))
    got = values(items)
    assert [("dose_mg" in g) for g in got[:3]] == [False, False, False]
    assert got[3] == 'dose_mg: "n/a" is not a number'
    assert got[4] == "session_id: missing record key"
    assert (stats.records_read, stats.records_rejected) == (5, 2)


def test_absent_fields_are_missing_even_when_a_column_has_their_name(tmp_path: Path) -> None:
    items, stats = read_mapped(tmp_path, map_text("absent: [escort_present, note]\n"), "x.csv", csv_rows(
        f"A1,P1,{START},true,hello", header="session_id,patient_id,session_start,escort_present,note"))
    assert values(items) == [{"session_id": "A1", "patient_id": "P1", "session_start": T0}]
    assert stats.absent == ("escort_present", "note")


@pytest.mark.parametrize("cell, expected", [("35 mg", 35), ("35mg", 35), ("35 MG", 35), ("35", 35),
                                            ("35 mcg", 'dose_mg (column "Dose"): "35 mcg" is not a number'),
                                            ("mg", 'dose_mg (column "Dose"): "mg" is not a number')])
def test_unit_is_stripped_and_another_unit_rejected(tmp_path: Path, cell: str, expected: float | str) -> None:
    items, _ = read_mapped(tmp_path, map_text("", "dose_mg: {column: Dose, unit: mg}\n"), "x.csv",
                           one_row("Dose", cell))
    got = values(items)[0]
    assert got == expected if isinstance(expected, str) else got["dose_mg"] == expected  # type: ignore[index]


@pytest.mark.parametrize("cell, sbp, dbp", [("134/83", 134, 83), (" 134 / 83 ", 134, 83), ("134/", 134, None),
                                            ("/83", None, 83), ("134", 134, None), ("NULL", None, None),
                                            ("134/NULL", 134, None)])
def test_split_and_part(tmp_path: Path, cell: str, sbp: int | None, dbp: int | None) -> None:
    items, _ = read_mapped(tmp_path, map_text('missing: ["NULL"]\n', 'sbp: {column: "BP Pre", split: "/", part: 1}\n'
                                                                     'dbp: {column: "BP Pre", split: "/", part: 2}\n'),
                           "x.csv", one_row("BP Pre", cell))
    got = values(items)[0]
    assert (got.get("sbp"), got.get("dbp")) == (sbp, dbp)  # type: ignore[union-attr]


def test_a_part_that_does_not_convert_names_the_column(tmp_path: Path) -> None:
    items, _ = read_mapped(tmp_path, map_text("", 'sbp: {column: "BP Pre", split: "/", part: 1}\n'), "x.csv",
                           csv_rows(f"A1,P1,{START},high/83", header="session_id,patient_id,session_start,BP Pre"))
    assert values(items) == ['sbp (column "BP Pre"): "high" is not an integer']


@pytest.mark.parametrize("cell, expected", [("Intravenous", "IV"), ("Intranasal", "IN"), ("IV", "IV"),
                                            ("Oral", 'route (column "Route"): "Oral" is not one of IV, IN')])
def test_values_relabel_and_unlisted_labels_pass_through(tmp_path: Path, cell: str, expected: str) -> None:
    relabel = "route: {column: Route, values: {Intravenous: IV, Intranasal: IN}}\n"
    items, _ = read_mapped(tmp_path, map_text("", relabel), "x.csv", one_row("Route", cell))
    got = values(items)[0]
    assert got == expected if expected.startswith("route") else got["route"] == expected  # type: ignore[index]


def test_join_builds_a_key_from_several_columns(tmp_path: Path) -> None:
    items, _ = read_mapped(tmp_path, map_text("", 'session_id: {join: [CSN, "Line"]}\n'), "x.csv", csv_rows(
        f"A1,1,P1,{START}", f"A1,2,P1,{START}", f"A1,,P1,{START}", header="CSN,Line,patient_id,session_start"))
    got = values(items)
    assert [got[0]["session_id"], got[1]["session_id"]] == ["A1|1", "A1|2"]  # type: ignore[index]
    assert got[2] == "session_id: missing record key"  # a part missing: the joined value is missing


def workbook(path: Path, rows: list[list[Any]]) -> Path:
    """A workbook whose first sheet is a cover page and whose "Sessions" sheet holds ``rows``."""
    book = Workbook()
    cover = book.active
    assert cover is not None
    cover.title = "Cover"
    cover.append(["exported by", "someone"])
    sheet = book.create_sheet("Sessions")
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


XLSX_MAP = map_text('sheet: Sessions\ndatetime_formats: ["%m/%d/%Y %I:%M %p"]\ntimezone: America/Chicago\n',
                    "session_id: CSN\nsigned_on: Signed\ndevices: Devices\n")


def test_xlsx_typed_cells(tmp_path: Path) -> None:
    signed = dt.date(2026, 3, 1)
    serial = (signed - dt.date(1899, 12, 30)).days  # Excel's 1900 calendar, from 1900-03-01 on
    workbook(tmp_path / "x.xlsx", [
        ["CSN", "patient_id", "session_start", "Signed", "Devices", "note"],
        [12345, "P1", dt.datetime(2026, 3, 2, 10, 0), serial, 3, 12345.0],
        ["A2", "P1", "03/02/2026 02:05 PM", signed, "3", "text"],
    ])
    items, _ = read_mapped(tmp_path, XLSX_MAP, "x.xlsx", b"")
    zone = ZoneInfo("America/Chicago")
    assert values(items) == [
        {"session_id": "12345", "patient_id": "P1", "session_start": dt.datetime(2026, 3, 2, 10, tzinfo=zone),
         "signed_on": signed, "devices": 3, "note": "12345"},
        {"session_id": "A2", "patient_id": "P1", "session_start": dt.datetime(2026, 3, 2, 14, 5, tzinfo=zone),
         "signed_on": signed, "devices": 3, "note": "text"},
    ]
    assert [item.line for item in items] == [2, 3]  # type: ignore[union-attr]


def test_xlsx_serials_of_a_1904_workbook(tmp_path: Path) -> None:
    # old Excel for Mac counts from 1904-01-01: the same serial is 1,462 days later than in the 1900 system
    from openpyxl.utils.datetime import CALENDAR_MAC_1904

    signed = dt.date(2026, 3, 1)
    serial = (signed - dt.date(1904, 1, 1)).days
    path = workbook(tmp_path / "x.xlsx", [["CSN", "patient_id", "session_start", "Signed"],
                                          ["A1", "P1", dt.datetime(2026, 3, 2, 10, 0), serial]])
    from openpyxl import load_workbook

    book = load_workbook(path)
    book.epoch = CALENDAR_MAC_1904
    book["Sessions"]["C2"].value = dt.datetime(2026, 3, 2, 10, 0)  # written again under the 1904 system
    book.save(path)
    items, _ = read_mapped(tmp_path, XLSX_MAP, "x.xlsx", b"")
    zone = ZoneInfo("America/Chicago")
    assert values(items) == [{"session_id": "A1", "patient_id": "P1", "signed_on": signed,
                              "session_start": dt.datetime(2026, 3, 2, 10, tzinfo=zone)}]


def test_xlsx_error_cell_rejects_naming_the_column(tmp_path: Path) -> None:
    workbook(tmp_path / "x.xlsx", [["CSN", "patient_id", "session_start", "Devices"],
                                   ["A1", "P1", dt.datetime(2026, 3, 2, 10, 0), "#N/A"]])
    items, stats = read_mapped(tmp_path, XLSX_MAP, "x.xlsx", b"")
    assert values(items) == ['devices (column "Devices"): "#N/A" is a spreadsheet error, not a value']
    assert (items[0].line, stats.records_rejected) == (2, 1)  # type: ignore[union-attr]


VITAL_PACK = """\
pack: vitals
version: "1"
title: vital pack
timezone: UTC
records:
  vital:
    key: vital_id
    patient: patient_id
    time: taken_at
    fields:
      vital_id: string
      patient_id: string
      taken_at: datetime
      sbp: integer
      dbp: integer
      hr: integer
      spo2: integer
rules:
  - id: SPO2-01
    title: saturation at least 90
    severity: major
    for: vital
    require: {spo2: {at_least: 90}}
"""
LONG_MAP = """\
map: flow
version: "1"
inputs:
  - type: vital
    files: "Flow*.csv"
    long: {key: [CSN, "Taken At"], name: "Row Name", value: Value}
    columns:
      vital_id: {join: [CSN, "Taken At"]}
      patient_id: MRN
      taken_at: "Taken At"
      sbp: {column: BP, split: "/", part: 1}
      dbp: {column: BP, split: "/", part: 2}
      hr: Pulse
      spo2: SpO2
"""
FLOWSHEET = """\
CSN,Taken At,Row Name,Value,MRN
A1,2026-03-02T10:00:00,BP,134/83,P1
A1,2026-03-02T10:00:00,Pulse,80,P1
A2,2026-03-02T10:05:00,BP,120/70,P2
A1,2026-03-02T10:00:00,SpO2,97,P9
A2,2026-03-02T10:05:00,Pulse,70,P2
A2,2026-03-02T10:05:00,Pulse,70,P2
A3,2026-03-02T10:10:00,Pulse,70,P3
A3,2026-03-02T10:10:00,SpO2,95,P3
A3,2026-03-02T10:10:00,Pulse,75,P3
"""


def test_long_rows_are_gathered_by_key_at_the_first_rows_line(tmp_path: Path) -> None:
    items, stats = read_mapped(tmp_path, LONG_MAP, "Flowsheet.csv", FLOWSHEET, VITAL_PACK)
    at = dt.datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert [(item.line, values([item])[0]) for item in items] == [
        # A1's SpO2 row (line 5) is not next to its other rows; the other columns come from line 2 (P1, not P9)
        (2, {"vital_id": "A1|2026-03-02T10:00:00", "patient_id": "P1", "taken_at": at, "sbp": 134, "dbp": 83,
             "hr": 80, "spo2": 97}),
        # Pulse 70 twice (lines 6 and 7) is no conflict
        (4, {"vital_id": "A2|2026-03-02T10:05:00", "patient_id": "P2", "taken_at": at + dt.timedelta(minutes=5),
             "sbp": 120, "dbp": 70, "hr": 70}),
        (8, 'measurement "Pulse" has two different values (lines 8 and 10)'),
    ]
    assert (stats.rows_read, stats.records_read, stats.records_rejected) == (9, 3, 1)


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_long_input_counts_rows_and_records_in_the_report(tmp_path: Path) -> None:
    write(tmp_path, "pack.yaml", VITAL_PACK)
    write(tmp_path, "flow.map.yaml", LONG_MAP)
    write(tmp_path, "Flowsheet.csv", FLOWSHEET)
    report = tmp_path / "report.json"
    code, _, err = run_cli("audit", "--pack", str(tmp_path / "pack.yaml"), "--map", str(tmp_path / "flow.map.yaml"),
                           str(tmp_path / "Flowsheet.csv"), "-o", str(report), "--as-of", "2026-04-01")
    assert code == 1, err
    data = json.loads(report.read_text())
    [entry] = data["inputs"]
    rows = FLOWSHEET.count("\n") - 1
    assert (entry["rows_read"], entry["records_read"], entry["records_rejected"]) == (rows, 3, 1)
    assert (entry["map"], entry["entry"]) == ("flow", 0)
    assert [r["source"]["line"] for r in data["rejected"]] == [8]
    # A1 (97) passes; A2 has no SpO2 row: not documented, so it fails
    assert [(r["passed"], r["failed"]) for r in data["rules"]] == [(1, 1)]
    assert [f["record_key"] for f in data["findings"]] == ["A2|2026-03-02T10:05:00"]


def test_a_measurement_no_row_has_stops_the_run(tmp_path: Path) -> None:
    write(tmp_path, "pack.yaml", VITAL_PACK)
    write(tmp_path, "flow.map.yaml", LONG_MAP)
    flowsheet = write(tmp_path, "Flowsheet.csv", "".join(line + "\n" for line in FLOWSHEET.splitlines()
                                                          if ",SpO2," not in line))
    report = tmp_path / "report.json"
    code, _, err = run_cli("audit", "--pack", str(tmp_path / "pack.yaml"), "--map", str(tmp_path / "flow.map.yaml"),
                           str(flowsheet), "-o", str(report))
    assert code == 2
    assert f'{flowsheet}: field spo2 (read by rule SPO2-01) has no column "SpO2"' in err.splitlines()
    assert not report.exists()


def test_a_flowsheet_record_with_a_row_that_could_not_be_read_is_rejected_with_it(tmp_path: Path) -> None:
    # line 3 (A1's Pulse) has a cell too many: A1 judged without it could fail for a pulse the export has
    sheet = FLOWSHEET.replace("A1,2026-03-02T10:00:00,Pulse,80,P1", "A1,2026-03-02T10:00:00,Pulse,80,P1,extra")
    items, stats = read_mapped(tmp_path, LONG_MAP, "Flowsheet.csv", sheet, VITAL_PACK)
    rejected = [(item.line, item.reason) for item in items if isinstance(item, Rejected)]
    assert rejected == [
        (3, "row has 6 cells, header has 5"),
        (2, "line 3 of this record was rejected (row has 6 cells, header has 5)"),
        (8, 'measurement "Pulse" has two different values (lines 8 and 10)'),
    ]
    assert [item.line for item in items if not isinstance(item, Rejected)] == [4]
    assert (stats.rows_read, stats.records_rejected) == (9, 3)


@pytest.mark.parametrize("row, problem", [
    ("A2,2026-03-02T10:05:00,,99,P2", "line 11 has a value but no measurement name"),
    ("A2,2026-03-02T10:05:00,MRN,P7,P2", 'measurement "MRN" (line 11) is also a column of the export'),
])
def test_a_flowsheet_row_that_cannot_be_placed_rejects_its_record(tmp_path: Path, row: str, problem: str) -> None:
    sheet = FLOWSHEET + row + "\n"
    items, _ = read_mapped(tmp_path, LONG_MAP, "Flowsheet.csv", sheet, VITAL_PACK)
    assert (4, problem) in [(item.line, item.reason) for item in items if isinstance(item, Rejected)]
    assert 4 not in [item.line for item in items if not isinstance(item, Rejected)]


def test_a_flowsheet_without_its_name_column_stops_the_run(tmp_path: Path) -> None:
    write(tmp_path, "pack.yaml", VITAL_PACK)
    write(tmp_path, "flow.map.yaml", LONG_MAP)
    flowsheet = write(tmp_path, "Flowsheet.csv", FLOWSHEET.replace("Row Name", "Row Nam"))
    code, _, err = run_cli("audit", "--pack", str(tmp_path / "pack.yaml"), "--map", str(tmp_path / "flow.map.yaml"),
                           str(flowsheet), "-o", str(tmp_path / "report.json"))
    assert code == 2
    assert f"{flowsheet}: long: the name column \"Row Name\" is not in the header; closest header names: 'Row Nam'" \
        in err.splitlines()


def test_a_utf8_mark_before_a_cp1252_header_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    from engine.inputs.sources import header_of

    data = b"\xef\xbb\xbf" + f"CSN;MRN;Start\nA1;P1;{START}\n".encode("cp1252")
    source_map = map_text('encoding: cp1252\ndelimiter: ";"\n',
                          "session_id: CSN\npatient_id: MRN\nsession_start: Start\n")
    items, _ = read_mapped(tmp_path, source_map, "x.csv", data)
    assert values(items) == [{"session_id": "A1", "patient_id": "P1", "session_start": T0}]
    context = PackContext([load_pack_bytes(PACK.encode(), "pack.yaml")])
    loaded = load_map_bytes(source_map.encode(), "m", context.types)
    [binding] = bind([str(tmp_path / "x.csv")], context.types, [loaded])
    assert header_of(binding) == ["CSN", "MRN", "Start"]


def test_joined_cells_that_hold_the_separator_give_different_keys(tmp_path: Path) -> None:
    data = f"A,B,MRN,Start\nx|y,z,P1,{START}\nx,y|z,P2,{START}\nx\\,|z,P3,{START}\n"
    columns = "session_id: {join: [A, B]}\npatient_id: MRN\nsession_start: Start\n"
    items, _ = read_mapped(tmp_path, map_text("", columns), "x.csv", data)
    assert [item.values["session_id"] for item in items if isinstance(item, Record)] == ["x\\|y|z", "x|y\\|z",
                                                                                       "x\\\\|\\|z"]


def test_the_same_map_twice_is_a_usage_error(tmp_path: Path) -> None:
    write(tmp_path, "pack.yaml", VITAL_PACK)
    write(tmp_path, "flow.map.yaml", LONG_MAP)
    copy = write(tmp_path, "copy.map.yaml", LONG_MAP)
    flowsheet = write(tmp_path, "Flowsheet.csv", FLOWSHEET)
    base = ("audit", "--pack", str(tmp_path / "pack.yaml"), "--map", str(tmp_path / "flow.map.yaml"))
    code, _, err = run_cli(*base, "--map", str(tmp_path / "flow.map.yaml"), str(flowsheet))
    assert code == 2 and "the same map is given twice" in err
    code, _, err = run_cli(*base, "--map", str(copy), str(flowsheet))
    assert code == 2 and f'{copy}: map "flow" is also the id of {tmp_path / "flow.map.yaml"}' in err
