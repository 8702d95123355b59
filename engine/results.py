"""What an audit found, typed and frozen: findings, not-evaluable records, rejected records, per-rule
results and the whole report (SPEC section 7).

The judge produces the entries, the report builder assembles a Report, and every format renders a
Report. ``Report.to_json`` is the JSON report, key for key in the SPEC's order; ``Report.from_json``
reads one back (a saved report rendered again, or a report written by hand in the tests), and
``from_json(report).to_json() == report`` for every report this tool writes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from engine.language.model import SEVERITIES, Rejected, window_text

Json = dict[str, Any]

__all__ = ["Comparison", "Finding", "InputSummary", "MonthCount", "NotEvaluable", "PackSummary", "Rejected", "Report",
           "RuleChange", "RuleResult", "Source", "StratumCount", "Strata", "Summary"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record is in its input: the file as given and the 1-based line its record starts on."""

    path: str
    line: int

    def to_json(self) -> Json:
        return {"path": self.path, "line": self.line}

    @classmethod
    def from_json(cls, data: Json) -> Source:
        return cls(data["path"], data["line"])


@dataclass(frozen=True, slots=True)
class Finding:
    """A record that failed a rule (``outcome`` "fail"), or one a waiver covers ("waived").

    Identifying values (record_key, patient, the message's and evidence's phi fields) are as the
    privacy gate let them through: pseudonyms unless identifiers are revealed.
    """

    rule: str
    pack: str
    severity: str
    outcome: str
    record_type: str
    record_key: str
    patient: str | None
    time: str | None  # ISO 8601 with the record's offset, as the report shows it
    source: Source
    message: str
    evidence: Mapping[str, Any]
    missing: tuple[str, ...] = ()  # fields whose absence made the rule fail
    waiver: Mapping[str, Any] | None = None
    fingerprint: str | None = None  # with --archive: the keyed HMAC that matches it across audits
    since_last_audit: str | None = None  # compared with the last archived audit: "new" or "persisting"
    # rejected records (path:line) of the same patient, of a type the rule's history reads, in its
    # window: the finding may be a data-entry gap rather than a gap in care
    suspect: tuple[str, ...] = ()

    @property
    def counts(self) -> bool:
        """Whether it counts against the verdict and the compliance rate (waived ones do not)."""
        return self.outcome == "fail"

    def to_json(self) -> Json:
        data: Json = {"rule": self.rule, "pack": self.pack, "severity": self.severity, "outcome": self.outcome,
                      "record_type": self.record_type, "record_key": self.record_key, "patient": self.patient,
                      "time": self.time, "source": self.source.to_json(), "message": self.message,
                      "evidence": dict(self.evidence)}
        if self.missing:
            data["missing"] = list(self.missing)
        if self.waiver is not None:
            data["waiver"] = dict(self.waiver)
        if self.fingerprint is not None:
            data["fingerprint"] = self.fingerprint
        if self.since_last_audit is not None:
            data["since_last_audit"] = self.since_last_audit
        if self.suspect:  # said only when true, so a report without suspects reads as before
            data["data_quality_suspect"] = True
            data["rejected_nearby"] = list(self.suspect)
        return data

    @classmethod
    def from_json(cls, data: Json) -> Finding:
        return cls(data["rule"], data["pack"], data["severity"], data["outcome"], data["record_type"],
                   data["record_key"], data["patient"], data["time"], Source.from_json(data["source"]),
                   data["message"], data["evidence"], tuple(data.get("missing", ())), data.get("waiver"),
                   data.get("fingerprint"), data.get("since_last_audit"), tuple(data.get("rejected_nearby", ())))


@dataclass(frozen=True, slots=True)
class NotEvaluable:
    """A record a rule could not judge: fields its ``when`` needs are missing."""

    rule: str
    pack: str
    record_type: str
    record_key: str
    missing: tuple[str, ...]
    source: Source

    def to_json(self) -> Json:
        return {"rule": self.rule, "pack": self.pack, "record_type": self.record_type,
                "record_key": self.record_key, "missing": list(self.missing), "source": self.source.to_json()}

    @classmethod
    def from_json(cls, data: Json) -> NotEvaluable:
        return cls(data["rule"], data["pack"], data["record_type"], data["record_key"], tuple(data["missing"]),
                   Source.from_json(data["source"]))


def finding_order(finding: Finding) -> tuple[str, str, float, str]:
    """The order the report lists findings in: by rule, pack, record time (untimed last), key."""
    moment = dt.datetime.fromisoformat(finding.time).timestamp() if finding.time else math.inf
    return finding.rule, finding.pack, moment, finding.record_key


def not_evaluable_order(entry: NotEvaluable) -> tuple[str, str, str]:
    return entry.rule, entry.pack, entry.record_key


def rejected_to_json(item: Rejected) -> Json:
    """A rejected record as the report lists it (the reason already went through the privacy gate)."""
    return {"source": {"path": item.path, "line": item.line}, "record_type": item.type, "reason": item.reason}


def rejected_from_json(data: Json) -> Rejected:
    return Rejected(data["record_type"], data["source"]["path"], data["source"]["line"], data["reason"])


@dataclass(frozen=True, slots=True)
class RuleResult:
    """One rule's counts over the audit, its compliance rate with a 95% interval, and its target."""

    id: str
    pack: str
    title: str
    severity: str
    for_type: str
    applicable: int
    passed: int
    failed: int
    waived: int
    not_evaluable: int
    not_applicable: int
    compliance_rate: float | None
    ci95: tuple[float, float] | None
    target: float | None
    status: str
    cite: str | None
    rationale: str | None
    versions: tuple[VersionCount, ...] | None = None  # a rule with effective dates: counts per version
    # how many patients have at least one unwaived fail of the rule: 81 fails may be 16 patients
    patients_affected: int | None = None
    per: str | None = None  # counted once per patient ("patient") or per patient and value of a field

    @property
    def counted(self) -> str:
        """What the rule's counts count, in words: "records", "patients", "patients' course_id"."""
        return "records" if self.per is None else "patients" if self.per == "patient" else f"patients' {self.per}"

    def to_json(self) -> Json:
        data: Json = {
            "id": self.id, "pack": self.pack, "title": self.title, "severity": self.severity,
            "for": self.for_type, **({"per": self.per} if self.per is not None else {}),
            "applicable": self.applicable, "passed": self.passed, "failed": self.failed,
            "waived": self.waived, "not_evaluable": self.not_evaluable, "not_applicable": self.not_applicable}
        if self.patients_affected is not None:
            data["patients_affected"] = self.patients_affected
        data.update({
            "compliance_rate": self.compliance_rate, "ci95": None if self.ci95 is None else list(self.ci95),
            "target": self.target, "status": self.status, "cite": self.cite, "rationale": self.rationale})
        if self.versions is not None:
            data["versions"] = [version.to_json() for version in self.versions]
        return data

    @classmethod
    def from_json(cls, data: Json) -> RuleResult:
        ci95 = data.get("ci95")
        versions = data.get("versions")
        return cls(data["id"], data["pack"], data["title"], data["severity"], data["for"],
                   data["applicable"], data["passed"], data["failed"], data["waived"], data["not_evaluable"],
                   data["not_applicable"], data["compliance_rate"], None if ci95 is None else (ci95[0], ci95[1]),
                   data["target"], data["status"], data["cite"], data["rationale"],
                   None if versions is None else tuple(VersionCount.from_json(v) for v in versions),
                   data.get("patients_affected"), data.get("per"))


@dataclass(frozen=True, slots=True)
class VersionCount:
    """One version of a rule with effective dates: its window (days, inclusive) and its counts."""

    start: str | None
    end: str | None
    severity: str
    applicable: int
    passed: int
    failed: int
    waived: int
    not_evaluable: int
    not_applicable: int
    compliance_rate: float | None

    @property
    def window(self) -> str:
        return window_text(self.start, self.end)

    def to_json(self) -> Json:
        return {"effective": {"from": self.start, "until": self.end}, "severity": self.severity,
                "applicable": self.applicable, "passed": self.passed, "failed": self.failed, "waived": self.waived,
                "not_evaluable": self.not_evaluable, "not_applicable": self.not_applicable,
                "compliance_rate": self.compliance_rate}

    @classmethod
    def from_json(cls, data: Json) -> VersionCount:
        return cls(data["effective"]["from"], data["effective"]["until"], data["severity"], data["applicable"],
                   data["passed"], data["failed"], data["waived"], data["not_evaluable"], data["not_applicable"],
                   data["compliance_rate"])


@dataclass(frozen=True, slots=True)
class InputSummary:
    """One input file: its record type, content hash and what became of its records."""

    path: str
    record_type: str | None
    sha256: str
    records_read: int
    records_judged: int
    records_rejected: int
    map: str | None = None  # the source map and entry (0-based) that read the file (SPEC 8)
    entry: int | None = None
    rows_read: int | None = None  # a long (flowsheet) input: its rows, gathered into records_read
    skipped: int | None = None  # FHIR: resources of other types
    filtered: int | None = None  # FHIR: resources the view's where excluded
    absent: tuple[str, ...] = ()  # fields the map says this export does not have
    outside_period: int | None = None  # with a period: records read as history only, not judged

    _MAPPED: ClassVar[tuple[str, ...]] = ("map", "entry", "rows_read", "skipped", "filtered", "outside_period")

    @property
    def reading(self) -> str:
        """How a file read through a source map was read, in words ("" for a file read as is)."""
        parts = [f"map {self.map} entry {self.entry}" if self.map is not None else "",
                 f"{self.rows_read:,} rows" if self.rows_read is not None else "",
                 (f"{self.skipped:,} resources of other types skipped" if self.record_type else
                  f"{self.skipped:,} resources no map entry reads, skipped") if self.skipped else "",
                 f"{self.filtered:,} resources filtered out by the view" if self.filtered else "",
                 f"absent (all missing): {', '.join(self.absent)}" if self.absent else ""]
        return "; ".join(part for part in parts if part)

    def to_json(self) -> Json:
        data: Json = {"path": self.path, "record_type": self.record_type, "sha256": self.sha256,
                      "records_read": self.records_read, "records_judged": self.records_judged,
                      "records_rejected": self.records_rejected}
        data.update({key: getattr(self, key) for key in self._MAPPED if getattr(self, key) is not None})
        if self.absent:
            data["absent"] = list(self.absent)
        return data

    @classmethod
    def from_json(cls, data: Json) -> InputSummary:
        return cls(data["path"], data["record_type"], data["sha256"], data["records_read"], data["records_judged"],
                   data["records_rejected"], data.get("map"), data.get("entry"), data.get("rows_read"),
                   data.get("skipped"), data.get("filtered"), tuple(data.get("absent", ())),
                   data.get("outside_period"))


@dataclass(frozen=True, slots=True)
class PackSummary:
    id: str
    version: str
    title: str
    path: str
    sha256: str

    def to_json(self) -> Json:
        return {"id": self.id, "version": self.version, "title": self.title, "path": self.path,
                "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: Json) -> PackSummary:
        return cls(data["id"], data["version"], data["title"], data["path"], data["sha256"])


@dataclass(frozen=True, slots=True)
class Summary:
    records_read: int
    records_judged: int
    records_rejected: int
    findings: int
    by_severity: Mapping[str, int]  # unwaived findings per severity, every severity present
    exit_threshold: str
    records_outside_period: int | None = None  # with a period: read = judged + rejected + outside

    def to_json(self) -> Json:
        data: Json = {"records_read": self.records_read, "records_judged": self.records_judged,
                      "records_rejected": self.records_rejected}
        if self.records_outside_period is not None:
            data["records_outside_period"] = self.records_outside_period
        data.update({"findings": self.findings, "by_severity": dict(self.by_severity),
                     "exit_threshold": self.exit_threshold})
        return data

    @classmethod
    def from_json(cls, data: Json) -> Summary:
        return cls(data["records_read"], data["records_judged"], data["records_rejected"], data["findings"],
                   data["by_severity"], data["exit_threshold"], data.get("records_outside_period"))


@dataclass(frozen=True, slots=True)
class MonthCount:
    """One rule's passes and fails in one calendar month of the pack's time zone."""

    rule: str
    pack: str
    month: str
    passed: int
    failed: int
    compliance_rate: float | None

    def to_json(self) -> Json:
        return {"rule": self.rule, "pack": self.pack, "month": self.month, "passed": self.passed,
                "failed": self.failed, "compliance_rate": self.compliance_rate}

    @classmethod
    def from_json(cls, data: Json) -> MonthCount:
        return cls(data["rule"], data["pack"], data["month"], data["passed"], data["failed"], data["compliance_rate"])


@dataclass(frozen=True, slots=True)
class StratumCount:
    """One rule's counts in one stratum of the ``--group-by`` fields."""

    rule: str
    pack: str
    stratum: Mapping[str, str]
    applicable: int
    not_evaluable: int
    passed: int
    failed: int
    compliance_rate: float | None
    waived: int | None = None  # with --waivers: applicable = passed + failed + waived

    def to_json(self) -> Json:
        data: Json = {"rule": self.rule, "pack": self.pack, "stratum": dict(self.stratum),
                      "applicable": self.applicable, "not_evaluable": self.not_evaluable, "passed": self.passed,
                      "failed": self.failed}
        if self.waived is not None:
            data["waived"] = self.waived
        data["compliance_rate"] = self.compliance_rate
        return data

    @classmethod
    def from_json(cls, data: Json) -> StratumCount:
        return cls(data["rule"], data["pack"], data["stratum"], data["applicable"], data["not_evaluable"],
                   data["passed"], data["failed"], data["compliance_rate"], data.get("waived"))


@dataclass(frozen=True, slots=True)
class Strata:
    by: tuple[str, ...]
    rows: tuple[StratumCount, ...]

    def to_json(self) -> Json:
        return {"by": list(self.by), "rows": [row.to_json() for row in self.rows]}

    @classmethod
    def from_json(cls, data: Json) -> Strata:
        return cls(tuple(data["by"]), tuple(StratumCount.from_json(row) for row in data["rows"]))


@dataclass(frozen=True, slots=True)
class WaiverStatus:
    """One waiver in the report: ``applied``, ``unused`` or ``expired`` (as of the run)."""

    id: str
    rule: str
    pack: str
    status: str
    records_waived: int
    expires: str | None

    def to_json(self) -> Json:
        return {"id": self.id, "rule": self.rule, "pack": self.pack, "status": self.status,
                "records_waived": self.records_waived, "expires": self.expires}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WaiverStatus:
        return cls(data["id"], data["rule"], data["pack"], data["status"], data["records_waived"], data["expires"])


@dataclass(frozen=True, slots=True)
class RuleChange:
    """One rule against the last archived audit: its rate then, the change, and its findings matched
    by fingerprint (None when they cannot be: another pseudonym key)."""

    rule: str
    pack: str
    compliance_rate: float | None  # the last audit's
    change: float | None  # this audit's rate minus the last's
    new: int | None
    persisting: int | None
    resolved: int | None
    in_last_audit: bool = True  # False: a rule the last audit did not have (its rate then is null)

    def to_json(self) -> Json:
        return {"rule": self.rule, "pack": self.pack, "in_last_audit": self.in_last_audit,
                "compliance_rate": self.compliance_rate, "change": self.change, "new": self.new,
                "persisting": self.persisting, "resolved": self.resolved}

    @classmethod
    def from_json(cls, data: Json) -> RuleChange:
        return cls(data["rule"], data["pack"], data["compliance_rate"], data["change"], data["new"],
                   data["persisting"], data["resolved"], data["in_last_audit"])


@dataclass(frozen=True, slots=True)
class Comparison:
    """``compared_to`` (SPEC 9): the previous archived audit of the same packs (the last one of the
    same days, a re-audit; else the one that began last before this one) and what changed since.

    A finding is ``new`` when the last audit did not have it open (failed, not waived), ``persisting``
    when it did; one the last audit had open is ``resolved`` when its record lies in this audit's
    period and it is no longer an open finding here (it passed, was waived, or is not in the export).
    """

    audit: int  # the last audit's id in the archive
    as_of: str
    period_from: str | None
    period_until: str | None
    first: str | None
    last: str | None
    new: int | None
    persisting: int | None
    resolved: int | None
    rules: tuple[RuleChange, ...]
    note: str | None = None  # why findings are not matched, when they are not

    @property
    def matched(self) -> bool:
        return self.new is not None

    def for_rule(self, pack: str, rule: str) -> RuleChange | None:
        return next((c for c in self.rules if c.pack == pack and c.rule == rule), None)

    def to_json(self) -> Json:
        period: Json = {"from": self.period_from, "until": self.period_until, "first": self.first,
                        "last": self.last}
        data: Json = {"audit": self.audit, "as_of": self.as_of, "period": period,
                      "findings": None if self.new is None else
                      {"new": self.new, "persisting": self.persisting, "resolved": self.resolved},
                      "rules": [change.to_json() for change in self.rules]}
        if self.note is not None:
            data["note"] = self.note
        return data

    @classmethod
    def from_json(cls, data: Json) -> Comparison:
        found = data["findings"] or {}
        period = data["period"]
        return cls(data["audit"], data["as_of"], period["from"], period["until"], period["first"], period["last"],
                   found.get("new"), found.get("persisting"), found.get("resolved"),
                   tuple(RuleChange.from_json(c) for c in data["rules"]), data.get("note"))


def _eager(items: Sequence[Any], convert: Callable[[Any], Json]) -> list[Json]:
    return [convert(item) for item in items]


class _Lazy(list):  # type: ignore[type-arg]
    """A list for json.dump whose entries are made one at a time as it is iterated (it holds none)."""

    def __init__(self, items: Sequence[Any], convert: Callable[[Any], Json]) -> None:
        super().__init__()
        self.items, self.convert = items, convert

    def __iter__(self) -> Iterator[Json]:
        return (self.convert(item) for item in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


@dataclass(frozen=True, slots=True)
class Report:
    """A whole audit report; identical inputs and as-of time give an identical Report."""

    tool_name: str
    tool_version: str
    as_of: str
    inputs: tuple[InputSummary, ...]
    packs: tuple[PackSummary, ...]
    period_first: str | None
    period_last: str | None
    pseudonymised: bool
    identifiers: str  # how patient identifiers are shown, in words
    summary: Summary
    rules: tuple[RuleResult, ...]
    findings: Sequence[Finding]  # a tuple, or entries read back from disk (engine/spool.py)
    not_evaluable: Sequence[NotEvaluable]
    rejected: tuple[Rejected, ...]
    by_month: tuple[MonthCount, ...]
    strata: Strata | None = None
    period_from: str | None = None  # the period given (--period), each end a date or None (open)
    period_until: str | None = None
    period_given: bool = False
    waivers: tuple[WaiverStatus, ...] | None = None  # with --waivers: each waiver's status and use
    archived: bool = False  # with --archive: compared_to is in the report (null for the first audit)
    compared_to: Comparison | None = None

    def failing(self, fail_on: str) -> int:
        """How many unwaived findings are at or above severity ``fail_on``."""
        threshold = SEVERITIES.index(fail_on)
        return sum(1 for f in self.findings if f.counts and SEVERITIES.index(f.severity) <= threshold)

    def to_json(self, lazy: bool = False) -> Json:
        """The JSON report as data. ``lazy``: the findings, not-evaluable and rejected lists make
        each entry's data only as a writer iterates over them (json.dump with an indent walks lists
        in Python), so a report of many findings is written without all of it in memory twice."""
        listed = _Lazy if lazy else _eager
        data: Json = {
            "tool": {"name": self.tool_name, "version": self.tool_version},
            "as_of": self.as_of,
            "inputs": [item.to_json() for item in self.inputs],
            "packs": [pack.to_json() for pack in self.packs],
            "period": self.period_json(),
            "pseudonymised": self.pseudonymised,
            "identifiers": self.identifiers,
            "summary": self.summary.to_json(),
            "rules": [rule.to_json() for rule in self.rules],
            "findings": listed(self.findings, lambda finding: finding.to_json()),
            "not_evaluable": listed(self.not_evaluable, lambda entry: entry.to_json()),
            "rejected": listed(self.rejected, rejected_to_json),
            "by_month": [row.to_json() for row in self.by_month],
        }
        if self.strata is not None:
            data["strata"] = self.strata.to_json()
        if self.waivers is not None:
            data["waivers"] = [waiver.to_json() for waiver in self.waivers]
        if self.archived:
            data["compared_to"] = None if self.compared_to is None else self.compared_to.to_json()
        return data

    def period_json(self) -> Json:
        """The period given (from, until: dates, null for an open end) and the judged record times."""
        given: Json = {"from": self.period_from, "until": self.period_until} if self.period_given else {}
        return {**given, "first": self.period_first, "last": self.period_last}

    @classmethod
    def from_json(cls, data: Json) -> Report:
        strata = data.get("strata")
        period = data["period"]
        return cls(data["tool"]["name"], data["tool"]["version"], data["as_of"],
                   tuple(InputSummary.from_json(item) for item in data["inputs"]),
                   tuple(PackSummary.from_json(pack) for pack in data["packs"]),
                   data["period"]["first"], data["period"]["last"], data["pseudonymised"], data["identifiers"],
                   Summary.from_json(data["summary"]), tuple(RuleResult.from_json(rule) for rule in data["rules"]),
                   tuple(Finding.from_json(finding) for finding in data["findings"]),
                   tuple(NotEvaluable.from_json(entry) for entry in data["not_evaluable"]),
                   tuple(rejected_from_json(item) for item in data["rejected"]),
                   tuple(MonthCount.from_json(row) for row in data["by_month"]),
                   None if strata is None else Strata.from_json(strata),
                   period.get("from"), period.get("until"), "from" in period,
                   None if "waivers" not in data else tuple(WaiverStatus.from_json(w) for w in data["waivers"]),
                   "compared_to" in data,
                   None if data.get("compared_to") is None else Comparison.from_json(data["compared_to"]))
