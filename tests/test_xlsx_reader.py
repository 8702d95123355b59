"""The XLSX reader: header, row numbers, typed cells, serial dates, and files that are not what they claim."""

from __future__ import annotations

import datetime
import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from engine.errors import InputError
from engine.inputs import xlsx_reader
from engine.inputs.xlsx_reader import CellError, excel_serial, open_sheet

SHEET_XML = "xl/worksheets/sheet1.xml"
NS = b'<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main">'


def workbook(path: Path, rows: list[list[Any]], title: str = "Sessions",
             formats: dict[str, str] | None = None, extra_sheets: tuple[str, ...] = ()) -> str:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = title
    for row in rows:
        ws.append(row)
    for coordinate, number_format in (formats or {}).items():
        ws[coordinate].number_format = number_format
    for name in extra_sheets:
        wb.create_sheet(name)
    wb.save(path)
    return str(path)


def patch_sheet(path: str, change: Callable[[bytes], bytes]) -> str:
    """Rewrite the first sheet's XML (openpyxl cannot write cached formula values or far cells)."""
    source = Path(path)
    members = {}
    with zipfile.ZipFile(source) as archive:
        infos = archive.infolist()
        for info in infos:
            members[info.filename] = archive.read(info)
    members[SHEET_XML] = change(members[SHEET_XML])
    with zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as archive:
        for info in infos:
            archive.writestr(info.filename, members[info.filename])
    return path


def replace_data(path: str, sheet_data: bytes) -> str:
    return patch_sheet(path, lambda _: NS + b"<sheetData>" + sheet_data + b"</sheetData></worksheet>")


def error_of(path: str, sheet: str | None = None) -> str:
    with pytest.raises(InputError) as caught:
        opened = open_sheet(path, sheet)
        list(opened.rows())
    return str(caught.value)


def test_header_is_the_first_row_with_a_value_and_rows_keep_excel_numbers(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [[], [None, None], ["  CSN ", "Dose", None, "Route"],
                                          ["A1", 35, None, "IV"], [None, None, None], ["", None], ["A2", 40]])
    sheet = open_sheet(path, None)
    assert (sheet.name, sheet.header, sheet.header_row) == ("Sessions", ["CSN", "Dose", "", "Route"], 3)
    assert list(sheet.rows()) == [(4, ["A1", 35, None, "IV"]), (7, ["A2", 40])]
    assert sheet.sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_a_row_wider_than_the_header_is_returned_as_read(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN", "Dose"], ["A1", 35, None, "extra"]])
    assert list(open_sheet(path, None).rows()) == [(2, ["A1", 35, None, "extra"])]


def test_rows_can_be_read_twice(tmp_path: Path) -> None:
    sheet = open_sheet(workbook(tmp_path / "s.xlsx", [["CSN"], ["A1"]]), None)
    assert list(sheet.rows()) == list(sheet.rows()) == [(2, ["A1"])]


CELLS = [
    pytest.param(datetime.date(2025, 1, 1), "yyyy-mm-dd", datetime.date(2025, 1, 1), id="date-format"),
    pytest.param(datetime.datetime(2025, 1, 1, 8, 30, 15), "yyyy-mm-dd hh:mm:ss",
                 datetime.datetime(2025, 1, 1, 8, 30, 15), id="datetime"),
    pytest.param(datetime.datetime(2025, 1, 1), "yyyy-mm-dd hh:mm", datetime.datetime(2025, 1, 1),
                 id="midnight-with-a-time-format-stays-datetime"),
    pytest.param(45658.5, "yyyy-mm-dd hh:mm", datetime.datetime(2025, 1, 1, 12), id="raw-serial-date-format"),
    pytest.param(45658.354166666664, "yyyy-mm-dd hh:mm", datetime.datetime(2025, 1, 1, 8, 30),
                 id="floating-days-round-to-the-second"),
    pytest.param(45658 + (8 * 3600 + 29 * 60 + 59.6) / 86400, "yyyy-mm-dd hh:mm",
                 datetime.datetime(2025, 1, 1, 8, 30), id="a-fraction-of-a-second-rounds-up"),
    pytest.param(45658 + (8 * 3600 + 30 * 60 + 0.3) / 86400, "yyyy-mm-dd hh:mm",
                 datetime.datetime(2025, 1, 1, 8, 30), id="a-fraction-of-a-second-rounds-down"),
    pytest.param(0.3541666666, "hh:mm", datetime.time(8, 30), id="time"),
    pytest.param("1.0", None, "1.0", id="text"),
    pytest.param(1, None, 1, id="integer"),
    pytest.param(1.0, None, 1, id="integral-float-is-int"),
    pytest.param(1.5, None, 1.5, id="float"),
    pytest.param(True, None, True, id="true"),
    pytest.param(False, None, False, id="false"),
    pytest.param("#N/A", None, CellError("#N/A"), id="error-na"),
    pytest.param("#DIV/0!", None, CellError("#DIV/0!"), id="error-div0"),
]


@pytest.mark.parametrize(("value", "number_format", "expected"), CELLS)
def test_cell_values(tmp_path: Path, value: Any, number_format: str | None, expected: Any) -> None:
    path = workbook(tmp_path / "s.xlsx", [["field"], [value]], formats={"A2": number_format} if number_format else {})
    [(_, [cell])] = list(open_sheet(path, None).rows())
    assert (cell, type(cell)) == (expected, type(expected))


def test_a_number_written_with_a_point_or_exponent_is_int_when_integral(tmp_path: Path) -> None:
    path = replace_data(workbook(tmp_path / "s.xlsx", [["a"]]),
                        b'<row r="1"><c r="A1" t="inlineStr"><is><t>a</t></is></c></row>'
                        b'<row r="2"><c r="A2"><v>1.0</v></c><c r="B2"><v>1E3</v></c><c r="C2"><v>2.5</v></c></row>')
    [(_, cells)] = list(open_sheet(path, None).rows())
    assert [(cell, type(cell)) for cell in cells] == [(1, int), (1000, int), (2.5, float)]


def test_text_that_looks_like_an_error_stays_text(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["field"], ["x"]])
    patch_sheet(path, lambda xml: xml.replace(b"<t>x</t>", b"<t>#N/A</t>"))
    assert list(open_sheet(path, None).rows()) == [(2, ["#N/A"])]


def test_formula_gives_its_cached_value(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["a", "b", "c"], [1, "=A2+1", "=A2/0"]])
    patch_sheet(path, lambda xml: xml.replace(b"<f>A2+1</f><v />", b"<f>A2+1</f><v>2</v>")
                .replace(b'<c r="C2"><f>A2/0</f><v />', b'<c r="C2" t="e"><f>A2/0</f><v>#DIV/0!</v>'))
    assert list(open_sheet(path, None).rows()) == [(2, [1, 2, CellError("#DIV/0!")])]


def test_a_merged_range_has_its_value_in_the_top_left_cell_only(tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.append(["a", "b"])
    ws.append(["m", 1])
    ws.append([None, 2])
    ws.merge_cells("A2:A3")
    wb.save(tmp_path / "s.xlsx")
    assert list(open_sheet(str(tmp_path / "s.xlsx"), None).rows()) == [(2, ["m", 1]), (3, [None, 2])]


def test_a_1904_workbook_gives_the_dates_it_shows(tmp_path: Path) -> None:
    wb = Workbook()
    wb.epoch = datetime.datetime(1904, 1, 1)  # openpyxl's CALENDAR_MAC_1904
    ws = wb.active
    assert ws is not None
    ws.append(["when"])
    ws.append([datetime.datetime(2025, 1, 1, 8, 30)])
    wb.save(tmp_path / "mac.xlsx")
    assert list(open_sheet(str(tmp_path / "mac.xlsx"), None).rows()) == [(2, [datetime.datetime(2025, 1, 1, 8, 30)])]


def test_a_file_not_named_xlsx_is_read(tmp_path: Path) -> None:
    workbook(tmp_path / "s.xlsx", [["CSN"], ["A1"]])
    (tmp_path / "s.xlsx").rename(tmp_path / "export.dat")
    assert list(open_sheet(str(tmp_path / "export.dat"), None).rows()) == [(2, ["A1"])]


@pytest.mark.parametrize(("serial", "expected"), [
    pytest.param(45658.0, datetime.datetime(2025, 1, 1), id="2025-01-01"),
    pytest.param(46084.385416, datetime.datetime(2026, 3, 3, 9, 15), id="rounded-to-the-second"),
    pytest.param(45658.99999999, datetime.datetime(2025, 1, 2), id="rounds-into-the-next-day"),
    pytest.param(1, datetime.datetime(1900, 1, 1), id="serial-1"),
    pytest.param(59, datetime.datetime(1900, 2, 28), id="serial-59"),
    pytest.param(61, datetime.datetime(1900, 3, 1), id="serial-61-after-the-fictitious-day"),
    pytest.param(2958465, datetime.datetime(9999, 12, 31), id="last-day"),
])
def test_excel_serial(serial: float, expected: datetime.datetime) -> None:
    assert excel_serial(serial) == expected


@pytest.mark.parametrize("serial", [
    pytest.param(60, id="fictitious-1900-02-29"),
    pytest.param(60.5, id="noon-on-the-fictitious-day"),
    pytest.param(0.5, id="time-alone"),
    pytest.param(-1, id="negative"),
    pytest.param(2958466, id="after-9999"),
    pytest.param(2958465.999999999, id="rounds-past-9999"),
    pytest.param(float("nan"), id="nan"),
    pytest.param(True, id="bool"),
])
def test_excel_serial_outside_the_calendar(serial: float) -> None:
    with pytest.raises(ValueError):
        excel_serial(serial)


def test_unknown_sheet_lists_the_sheets_and_suggests(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN"]], extra_sheets=("Vitals",))
    assert error_of(path, "Sesions") == f'{path}: no sheet "Sesions" (sheets: "Sessions", "Vitals") ' \
                                        '(did you mean "Sessions"?)'


def test_sheet_names_match_without_case(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN"]], title="Vitals")
    assert open_sheet(path, "vitals").name == "Vitals"


def test_default_is_the_first_sheet(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN"]], extra_sheets=("Vitals",))
    assert open_sheet(path, None).name == "Sessions"


@pytest.mark.parametrize(("content", "reason"), [
    pytest.param(b"CSN,Dose\nA1,35\n", "not an XLSX workbook (not a zip archive)", id="csv-renamed"),
    pytest.param(b"", "empty file, not an XLSX workbook", id="empty"),
    pytest.param(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504),
                 "an encrypted (password-protected) workbook or an Excel 97-2003 .xls, not an XLSX: "
                 "save it from Excel as an .xlsx without a password", id="xls-or-encrypted"),
])
def test_not_an_xlsx(tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "export.xlsx"
    path.write_bytes(content)
    assert error_of(str(path)) == f"{path}: {reason}"


def test_missing_file(tmp_path: Path) -> None:
    assert error_of(str(tmp_path / "none.xlsx")).startswith(f"{tmp_path / 'none.xlsx'}: cannot be read (")


def test_truncated_file(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN"], ["A1"]])
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    assert error_of(path).startswith(f"{path}: not a readable XLSX workbook (broken or truncated zip: ")


def test_a_zip_that_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "s.xlsx"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert error_of(str(path)).startswith(f"{path}: not a readable XLSX workbook (")


def test_a_broken_sheet_xml(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN"], ["A1"]])
    patch_sheet(path, lambda xml: xml[: xml.index(b"</sheetData>")])
    assert error_of(path).startswith(f"{path}: the sheet cannot be read ")


def test_a_member_longer_than_the_zip_directory_says_fails_its_crc(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN"], ["A1"]])
    size = len(zipfile.ZipFile(path).read(SHEET_XML))
    patch_sheet(path, lambda xml: xml.replace(b"<sheetData>", b"<sheetData>" + b" " * 50_000))
    data = bytearray(Path(path).read_bytes())
    true_size = (size + 50_000).to_bytes(4, "little")
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local header, central directory
        start = data.find(signature)
        while start != -1:
            name_at = start + (30 if signature == b"PK\x03\x04" else 46)
            if data[name_at:name_at + len(SHEET_XML)] == SHEET_XML.encode():
                assert data[start + offset:start + offset + 4] == true_size
                data[start + offset:start + offset + 4] = size.to_bytes(4, "little")  # the directory lies
            start = data.find(signature, start + 4)
    Path(path).write_bytes(bytes(data))
    assert error_of(path) == f"{path}: not a readable XLSX workbook (Bad CRC-32 for file '{SHEET_XML}')"


def test_zip_bomb_is_refused_from_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx_reader, "MAX_SHEET_BYTES", 10 * 2**20)
    path = workbook(tmp_path / "s.xlsx", [["CSN"], ["A1"]])
    patch_sheet(path, lambda xml: xml.replace(b"<sheetData>", b"<sheetData>" + b" " * 60_000_000))
    assert Path(path).stat().st_size < 200_000
    size = zipfile.ZipFile(path).getinfo(SHEET_XML).file_size
    assert error_of(path) == f"{path}: worksheet {SHEET_XML} unpacks to {size:,} bytes, over the limit of 10,485,760"


def test_other_parts_are_bounded_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx_reader, "MAX_PART_BYTES", 100)
    path = workbook(tmp_path / "s.xlsx", [["CSN"], ["A1"]])
    assert " unpacks to " in error_of(path)


def test_rows_of_nothing_are_skipped(tmp_path: Path) -> None:
    # 20,000 rather than the sheet's 1,048,576: the full sheet takes 10-30 s (openpyxl parses each row);
    # what is asserted (styled cells with no value are no row) does not depend on how many there are
    path = workbook(tmp_path / "s.xlsx", [["CSN"]])
    rows = b"".join(b'<row r="%d"><c r="B%d" s="0"/></row>' % (number, number) for number in range(2, 20_002))
    replace_data(path, b'<row r="1"><c r="A1" t="inlineStr"><is><t>CSN</t></is></c></row>' + rows)
    assert list(open_sheet(path, None).rows()) == []


def test_a_cell_beyond_the_last_column(tmp_path: Path) -> None:
    path = replace_data(workbook(tmp_path / "s.xlsx", [["CSN"]]),
                        b'<row r="1"><c r="A1" t="inlineStr"><is><t>CSN</t></is></c></row>'
                        b'<row r="2"><c r="XFE2"><v>1</v></c></row>')
    assert error_of(path) == f"{path}: row 2: column 16,385 is beyond Excel's last column (XFD)"


def test_a_cell_beyond_the_last_row(tmp_path: Path) -> None:
    path = replace_data(workbook(tmp_path / "s.xlsx", [["CSN"]]),
                        b'<row r="1"><c r="A1" t="inlineStr"><is><t>CSN</t></is></c></row>'
                        b'<row r="1048577"><c r="A1048577"><v>1</v></c></row>')
    assert error_of(path) == f"{path}: row 1,048,577 is beyond Excel's last row (1,048,576)"


def test_a_cell_far_out_on_the_grid_is_one_row_not_a_rectangle(tmp_path: Path) -> None:
    path = replace_data(workbook(tmp_path / "s.xlsx", [["CSN"]]),
                        b'<row r="1"><c r="A1" t="inlineStr"><is><t>CSN</t></is></c></row>'
                        b'<row r="1048576"><c r="XFD1048576"><v>1</v></c></row>')
    [(number, cells)] = list(open_sheet(path, None).rows())
    assert (number, len(cells), cells[-1]) == (1_048_576, 16_384, 1)


def test_rows_out_of_order(tmp_path: Path) -> None:
    path = replace_data(workbook(tmp_path / "s.xlsx", [["CSN"]]),
                        b'<row r="1"><c r="A1" t="inlineStr"><is><t>CSN</t></is></c></row>'
                        b'<row r="3"><c r="A3"><v>1</v></c></row><row r="3"><c r="A3"><v>1</v></c></row>')
    assert error_of(path) == f"{path}: row 3 comes after row 3"


def test_an_oversized_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx_reader, "MAX_CELL_CHARS", 10)
    path = workbook(tmp_path / "s.xlsx", [["CSN", "Note"], ["A1", "x" * 11]])
    assert error_of(path) == f"{path}: row 2, column B: a cell is longer than 10 characters"


def test_empty_sheet(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [[None], []])
    assert error_of(path) == f'{path}: sheet "Sessions" is empty (no header row)'


def test_duplicate_header_name(tmp_path: Path) -> None:
    path = workbook(tmp_path / "s.xlsx", [["CSN", "Dose", " CSN"]])
    assert error_of(path) == f'{path}: column "CSN" appears twice in the header'
