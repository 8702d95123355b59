"""What each command of the command line does, given its parsed options; returns the exit code.

cli.py declares the commands and their options with click and runs these under console.guard,
which turns every AuditError into one line and exit 2.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import math
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import reporters
from engine.commands import diff as impact
from engine.commands import packtest
from engine.commands.console import (
    EXIT_ERROR,
    EXIT_FINDINGS,
    EXIT_SUCCESS,
    Progress,
    echo,
    echo_lines,
    print_out,
    pseudonymiser,
)
from engine.commands.explain import explain as explain_outcome
from engine.commands.inspect import inspect_inputs
from engine.commands.outputs import Outputs, inputs_of
from engine.errors import UsageError
from engine.inputs.maps import SourceMap, either_types, is_map_ref, load_maps
from engine.judge import pipeline
from engine.judge.period import Period
from engine.language.conditions import describe
from engine.language.model import RecordType, count_rules, merged_types, window_text
from engine.language.values import timezone
from engine.packs import load_packs, orphan_tests
from engine.privacy import KEY_VARIABLE, Pseudonymiser
from engine.reporters import diff_report
from engine.reporters import report as report_builder
from engine.results import Report
from engine.waivers import Waivers, is_waivers_ref, load_waivers

if TYPE_CHECKING:
    from engine.archive import Archive


def _renderer(path: str, max_findings: int) -> reporters.Renderer:
    render: Any = reporters.for_path(path)
    if path.lower().endswith(".md"):  # the one format with an option of its own
        render = functools.partial(render, max_findings=max_findings)
    return render  # type: ignore[no-any-return]


def _load_maps(refs: list[str], types: Mapping[str, RecordType]) -> list[SourceMap]:
    """The run's maps, checked against its record types; each entry no pack of the run reads is said."""
    source_maps = load_maps(refs, types)
    for source in source_maps:
        for note in source.notes():
            echo(f"protocol-audit: {note}", err=True)
    return source_maps


def audit(packs: list[str], maps: list[str], files: list[str], written: Outputs, fail_on: str,
          run_time: dt.datetime, group_by: list[str], max_findings: int, reveal_identifiers: bool,
          key_file: str | None, period: Period | None = None, waiver_files: list[str] | None = None,
          archive_target: str | None = None) -> int:
    outputs = written.paths
    renderers = [(path, _renderer(path, max_findings)) for path in outputs]
    archived = [("the archive", archive_target)] if archive_target else []
    written.check([*inputs_of(files, packs, key_file, maps, waiver_files or []), *archived])
    loaded = load_packs(packs)
    types, zone = merged_types(loaded)
    source_maps = _load_maps(maps, types)
    waivers = Waivers(load_waivers(waiver_files, loaded), run_time, timezone(zone)) if waiver_files else None
    fingerprints = archive_key(key_file) if archive_target else None  # the same key as the pseudonyms
    pseudonymise = pseudonymiser(reveal_identifiers, key_file) if fingerprints is None or reveal_identifiers \
        else fingerprints
    archive = open_archive(archive_target) if archive_target else None
    progress = Progress()
    try:
        result, stats = pipeline.run(loaded, files, progress=progress, group_by=group_by,
                                     pseudonymise=pseudonymise, reveal=reveal_identifiers, maps=source_maps,
                                     period=period, waivers=waivers, fingerprints=fingerprints)
        progress.writing()
        report = report_builder.build(result, stats, loaded, run_time, fail_on, period, waivers)
        if archive is not None and fingerprints is not None:
            report = compared(report, archive, fingerprints.key_check, timezone(zone))
        written.write(renderers, report)
        progress.done()
        if period is not None and report.summary.records_judged == 0 and report.summary.records_read:
            echo(f"protocol-audit: no record of the inputs lies in the period {period}: nothing was judged",
                 err=True)
        if archive is not None and fingerprints is not None:
            number = archive.store(report, fingerprints.key_check)
            echo(f"protocol-audit: archived as audit {number} in {archive.shown}", err=True)
    finally:
        progress.done()
        if archive is not None:
            archive.close()
    if outputs:
        summary = report.summary
        echo(f"{summary.records_read} records read, {summary.records_rejected} rejected, "
             f"{summary.findings} findings; wrote {', '.join(outputs)}", err=True)
    else:  # the terminal report makes its own values visible
        print_out(lambda: reporters.get("txt")(report, sys.stdout))
    return EXIT_FINDINGS if report.failing(fail_on) else EXIT_SUCCESS


def archive_key(key_file: str | None) -> Pseudonymiser:
    """The key of an archive's fingerprints: the pseudonym key, which must stay the same between
    audits (a random key for one run would make every finding new each time)."""
    key = Pseudonymiser.from_settings(key_file)
    if key.random:
        raise UsageError(f"--archive needs a pseudonym key that stays the same between audits, so that "
                         f"findings can be matched with the last audit's: give --key-file or set {KEY_VARIABLE}")
    return key


def open_archive(target: str) -> Archive:
    """The archive, checked before anything is judged (sqlalchemy is loaded only now)."""
    from engine.archive import Archive

    return Archive(target)


def compared(report: Report, archive: Archive, key_check: str, tz: dt.tzinfo) -> Report:
    from engine.archive.compare import compared as compare

    return compare(report, archive, key_check, tz)


def explain(packs: list[str], rule_id: str, record_key: str, maps: list[str], files: list[str],
            reveal_identifiers: bool, key_file: str | None) -> int:
    loaded = load_packs(packs)
    source_maps = _load_maps(maps, merged_types(loaded)[0])
    lines, agrees = explain_outcome(loaded, rule_id, record_key, files, pseudonymiser(reveal_identifiers, key_file),
                                    source_maps)
    echo_lines(lines)
    if not agrees:
        echo("protocol-audit: the rule engine and the explanation disagree: please report this", err=True)
        return EXIT_ERROR
    return EXIT_SUCCESS


def validate(refs: list[str]) -> int:
    """Packs, maps and waivers files; a map's types and fields, and a waiver's rules and fields, are
    checked against the packs given with them."""
    map_refs = [ref for ref in refs if is_map_ref(ref)]
    waiver_refs = [ref for ref in refs if ref not in map_refs and is_waivers_ref(ref)]
    pack_refs = [ref for ref in refs if ref not in map_refs and ref not in waiver_refs]
    loaded = load_packs(pack_refs)
    for pack in loaded:
        echo(f"{pack.path}: ok ({pack.id} {pack.version}, {count_rules(pack.rules)})")
    for source in load_maps(map_refs, merged_types(loaded)[0] if loaded else None):
        for note in source.notes():
            echo(note)
        count = len(source.entries)
        checked = "" if loaded else "; give its packs too to check its record types and fields"
        named = " ".join(part for part in (source.id, source.version) if part)
        echo(f"{source.path}: ok (map {named}, {count} entr{'ies' if count != 1 else 'y'}"
             f"{checked})")
    if waiver_refs:  # all the files together first: a waiver id given in two of them is refused, as an audit does
        load_waivers(waiver_refs, loaded if loaded else None)
    for ref in waiver_refs:
        count = len(load_waivers([ref], loaded if loaded else None))
        checked = "" if loaded else "; give its packs too to check its rules and fields"
        echo(f"{ref}: ok ({count} waiver{'s' if count != 1 else ''}{checked})")
    return EXIT_SUCCESS


def test_packs(packs: list[str], min_coverage: float | None) -> int:
    if min_coverage is not None and math.isnan(min_coverage):
        raise UsageError("--min-coverage must be a number from 0 to 100")
    for ref in packs:  # scenarios whose pack was renamed or removed would silently stop running
        if Path(ref).is_dir() and (orphans := orphan_tests(Path(ref))):
            raise UsageError(f"{orphans[0]}: scenarios with no pack of that name beside them "
                             f"(rename them after their pack, or remove them)")
    failed = below = 0
    for pack in load_packs(packs):
        result = packtest.run_pack(pack)
        echo_lines(packtest.report_lines(result, min_coverage))
        failed += len(result.failed)
        below += len(packtest.below_minimum(result, min_coverage))
    if failed or below:
        reasons = [f"{failed} case{'s' if failed != 1 else ''} failed"] if failed else []
        reasons += [f"{below} rule{'s' if below != 1 else ''} below {min_coverage:g}% coverage"] if below else []
        echo(f"protocol-audit: {'; '.join(reasons)}", err=True)
        return EXIT_FINDINGS
    return EXIT_SUCCESS


def diff(base: list[str], head: list[str], maps: list[str], files: list[str], written: Outputs,
         fail_on_new: str | None, max_records: int, run_time: dt.datetime) -> int:
    outputs = written.paths
    writers = [(path, diff_report.for_path(path, max_records)) for path in outputs]
    written.check(inputs_of(files, (*base, *head), maps=maps))
    before, after = load_packs(base), load_packs(head)
    source_maps = _load_maps(maps, either_types(before, after))
    result = impact.compare(before, after, files, run_time, fail_on_new, source_maps)
    written.write(writers, result)
    if outputs:
        echo(f"protocol-audit diff: {diff_report.headline(result)}; wrote {', '.join(outputs)}", err=True)
    else:
        echo_lines(diff_report.lines(result, max_records))
    new = result["summary"]["newly_flagged_at_or_above"]
    return EXIT_FINDINGS if fail_on_new and new else EXIT_SUCCESS


def inspect(packs: list[str], maps: list[str], files: list[str], rows: int, reveal_identifiers: bool,
            key_file: str | None) -> int:
    loaded = load_packs(packs)
    source_maps = _load_maps(maps, merged_types(loaded)[0])
    echo_lines(inspect_inputs(loaded, source_maps, files, rows, pseudonymiser(reveal_identifiers, key_file)))
    return EXIT_SUCCESS


def trend(target: str, written: Outputs, packs: list[str]) -> int:
    from engine.commands.trend import trend as archived_trend
    from engine.reporters import trend_report

    writers = [(path, trend_report.for_path(path)) for path in written.paths]
    written.check([("the archive", target)])
    data = archived_trend(target, packs)
    written.write(writers, data)
    if written.paths:
        echo(f"protocol-audit trend: {len(data['audits'])} audits, {len(data['rules'])} rules; "
             f"wrote {', '.join(written.paths)}", err=True)
    else:
        echo_lines(trend_report.lines(data))
    return EXIT_SUCCESS


def handbook(packs: list[str], written: Outputs, bibliography: bool) -> int:
    from engine import handbook as book

    writers = [(path, book.for_path(path, bibliography)) for path in written.paths]
    loaded = load_packs(packs)
    written.check([("the pack", pack.path) for pack in loaded])
    if written.paths:
        written.write(writers, loaded)
        echo(f"protocol-audit handbook: {len(loaded)} pack{'s' if len(loaded) != 1 else ''}, "
             f"{count_rules(rule for pack in loaded for rule in pack.rules)}; wrote {', '.join(written.paths)}",
             err=True)
    else:
        out = io.StringIO()
        (book.render_bibliography if bibliography else book.render_markdown)(loaded, out)
        echo_lines(out.getvalue().splitlines())
    return EXIT_SUCCESS


def rules(packs: list[str]) -> int:
    for pack in load_packs(packs):
        echo(f"{pack.id} {pack.version} - {pack.title} ({pack.path})")
        width = max((len(r.id) for r in pack.rules), default=2)
        for rule in pack.rules:
            echo(f"  {rule.id:<{width}}  {rule.severity:<8}  {rule.for_type:<10}  {rule.title}")
            if rule.effective is not None:
                echo(f"  {'':<{width}}  in force: {window_text(*rule.effective)}")
            echo(f"  {'':<{width}}  applies when: {describe(rule.when)}")
    return EXIT_SUCCESS
