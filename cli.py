"""The protocol-audit command line: the commands and their options, declared with click.

What each command does is in engine/commands/run.py; messages, exit codes and the clean end of a
closed pipe or a signal in engine/commands/console.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import click

from engine.commands import run
from engine.commands.console import guard, visible_usage_errors
from engine.commands.outputs import Outputs
from engine.judge.period import Period
from engine.language.model import SEVERITIES
from engine.language.values import OutOfRange, in_zone
from engine.privacy import KEY_VARIABLE
from engine.version import __version__


def _as_of(text: str | None) -> dt.datetime:
    if text is None:
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f'"{text}" is not an ISO 8601 date or datetime') from None
    try:
        return in_zone(value, dt.UTC)  # without an offset: UTC
    except OutOfRange as exc:  # reports convert it to UTC and other zones
        raise click.BadParameter(f'"{text}" {exc}') from None


class _Commands(click.Group):
    """The command group; click's parsing and the commands' parameter errors go through
    visible_usage_errors."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        with visible_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with visible_usage_errors():
            return super().invoke(ctx)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=__version__, prog_name="protocol-audit")
def main() -> None:
    """Audit clinical protocol compliance: YAML rule packs judged against exported session records.

    \b
    Exit codes: 0 no finding at or above --fail-on; 1 such findings exist;
    2 bad usage, a bad rule pack or an unreadable input.
    """


def _identifier_options(command: Callable[..., None]) -> Callable[..., None]:
    """--reveal-identifiers and --key-file, the same for every command that shows record values."""
    command = click.option("--key-file", metavar="FILE",
                           help=f"The pseudonym key (else ${KEY_VARIABLE}; else a random key for this run "
                                "only).")(command)
    return click.option("--reveal-identifiers", is_flag=True,
                        help="Show patient identifiers and fields marked phi as they are in the inputs.")(command)


def _period(context: click.Context, parameter: click.Parameter, value: str | None) -> Period | None:
    """--period FROM..TO as a Period; a bad one is click's usage error (exit 2)."""
    if value is None:
        return None
    try:
        return Period.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _map_option(command: Callable[..., None]) -> Callable[..., None]:
    """--map, the same for every command that reads exports."""
    return click.option("--map", "maps", multiple=True, metavar="MAP",
                        help="A source map: how one system's export files become records (a file or a shipped "
                             "map name, e.g. fhir-r4). Repeatable.")(command)


@main.command()
@click.option("--pack", "-p", "packs", multiple=True, required=True, metavar="PACK",
              help="A pack file, a folder of packs, or a shipped pack name (repeatable).")
@_map_option
@click.argument("files", nargs=-1, required=True, metavar="[TYPE=]FILE...")
@click.option("--output", "-o", "outputs", multiple=True, metavar="FILE",
              help="Write a report; the format follows the extension: .json, .csv, .html, .md, .txt, "
                   ".xml (JUnit), .sarif. Repeatable.")
@click.option("--fail-on", type=click.Choice(SEVERITIES), default="major", show_default=True,
              help="Exit 1 when an unwaived finding of this severity or worse exists.")
@click.option("--as-of", "as_of", metavar="DATETIME",
              help="The run's time (ISO 8601); fixes it so reruns are byte-identical. Default: now.")
@click.option("--group-by", "group_by", multiple=True, metavar="FIELD",
              help="Add counts and rates per value of FIELD (or per month of the record time). Repeatable.")
@click.option("--period", metavar="FROM..TO", callback=_period,
              help="Judge only the records of these days (inclusive, the pack's time zone; either end may be "
                   "left out); the others are read and used as history. Default: every record.")
@click.option("--waivers", "waiver_files", multiple=True, metavar="FILE",
              help="A waivers file: approved exceptions that turn the fails they cover into waived. Repeatable.")
@click.option("--archive", metavar="TARGET",
              help="Keep this audit in an archive of audits, a SQLite file (created when absent) or a "
                   "postgresql:// URL, and compare it with the previous audit of the same packs there "
                   "(the last one of the same days, else the last one before them). "
                   "Needs a pseudonym key (--key-file or $" + KEY_VARIABLE + ").")
@click.option("--max-findings", default=20, show_default=True, metavar="N",
              type=click.IntRange(min=0), help="Findings listed per rule in a Markdown report.")
@_identifier_options
def audit(packs: tuple[str, ...], maps: tuple[str, ...], files: tuple[str, ...], outputs: tuple[str, ...],
          fail_on: str, as_of: str | None, group_by: tuple[str, ...], period: Period | None,
          waiver_files: tuple[str, ...], archive: str | None, max_findings: int, reveal_identifiers: bool,
          key_file: str | None) -> None:
    """Judge every rule of the packs on every record of the FILES.

    A FILE binds to a record type as TYPE=FILE, by its name (sessions.csv -> session),
    or by a record_type column; with --map, by the map entry whose files: match its name.
    Without -o, a summary is printed. Patient identifiers are
    pseudonymised with a keyed hash unless --reveal-identifiers is given; with the same key,
    pseudonyms (and so reports) are the same in every run.

    \b
    Example:
      protocol-audit audit --pack ketamine-iv samples/sessions.csv -o report.json -o findings.csv
    """
    run_time = _as_of(as_of)  # a bad value is click's usage error
    written = Outputs(outputs)
    guard(lambda: run.audit(list(packs), list(maps), list(files), written, fail_on, run_time, list(group_by),
                            max_findings, reveal_identifiers, key_file, period, list(waiver_files), archive),
          written)


@main.command()
@click.option("--pack", "-p", "packs", multiple=True, required=True, metavar="PACK",
              help="A pack file, a folder of packs, or a shipped pack name (repeatable).")
@click.option("--rule", "rule_id", required=True, metavar="ID", help="The rule to explain.")
@click.option("--record", "record_key", required=True, metavar="KEY", help="The key of the judged record.")
@_map_option
@click.argument("files", nargs=-1, required=True, metavar="[TYPE=]FILE...")
@_identifier_options
def explain(packs: tuple[str, ...], rule_id: str, record_key: str, maps: tuple[str, ...], files: tuple[str, ...],
            reveal_identifiers: bool, key_file: str | None) -> None:
    """Show why a rule gave one record its outcome.

    Every condition of the rule with the values it read and whether it held, history conditions
    with the window searched and the records matched; give all the files the audit read, so the
    patient's history is the same. Identifiers are pseudonymised as in the audit's report (the
    same key gives the same pseudonyms); KEY may be the record's key or its pseudonym.

    \b
    Example:
      protocol-audit explain --pack ketamine-iv --rule DOSE-01 --record S-000123 samples/sessions.csv
    """

    guard(lambda: run.explain(list(packs), rule_id, record_key, list(maps), list(files), reveal_identifiers,
                              key_file))


@main.command()
@click.argument("packs", nargs=-1, required=True, metavar="PACK|MAP...")
def validate(packs: tuple[str, ...]) -> None:
    """Check rule packs and source maps; every problem is printed as path:line:column: message
    (exit 2). A map's record types and fields are checked against the packs given with it."""

    guard(lambda: run.validate(list(packs)))


@main.command("test")
@click.argument("packs", nargs=-1, required=True, metavar="PACK...")
@click.option("--min-coverage", type=click.FloatRange(0, 100), metavar="PCT",
              help="Fail (exit 1) when a rule's coverage is below PCT percent.")
def test_packs(packs: tuple[str, ...], min_coverage: float | None) -> None:
    """Run the packs' rule examples and the scenario files beside them; report coverage.

    A pack's scenarios live in PACK.tests.yaml or PACK.tests/*.yaml beside it. Every failing
    case is printed with its file:line, the expected and actual outcome and every condition
    traced. Coverage per rule: a passing case, a failing case, and every condition decisive
    in some case. Exit 1 when a case fails or a rule is below --min-coverage.

    \b
    Example:
      protocol-audit test rules/ --min-coverage 100
    """

    guard(lambda: run.test_packs(list(packs), min_coverage))


@main.command("diff")
@click.option("--base", "base", multiple=True, required=True, metavar="PACK",
              help="The rules before the change: a pack file, folder, shipped name or git:REV:PATH (repeatable).")
@click.option("--head", "head", multiple=True, required=True, metavar="PACK",
              help="The rules after the change (repeatable).")
@_map_option
@click.argument("files", nargs=-1, required=True, metavar="[TYPE=]FILE...")
@click.option("--output", "-o", "outputs", multiple=True, metavar="FILE",
              help="Write the diff: .json or .md (a pull-request comment). Repeatable.")
@click.option("--fail-on-new", type=click.Choice(SEVERITIES), metavar="SEVERITY",
              help="Exit 1 when the change newly flags a record under a rule of this severity or worse.")
@click.option("--max-records", default=20, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Records listed per rule and direction in the terminal and Markdown forms.")
@click.option("--as-of", "as_of", metavar="DATETIME", help="The run's time (ISO 8601). Default: now.")
def diff_command(base: tuple[str, ...], head: tuple[str, ...], maps: tuple[str, ...], files: tuple[str, ...],
                 outputs: tuple[str, ...], fail_on_new: str | None, max_records: int, as_of: str | None) -> None:
    """Audit the same records with two versions of the rules and show what changes.

    Per rule: added, removed or changed (which parts), failures and compliance before and
    after, and the records newly flagged and no longer flagged with their source lines.

    \b
    Example (in CI, against the merge base):
      protocol-audit diff --base git:origin/main:rules/ --head rules/ exports/*.csv -o impact.md
    """
    run_time = _as_of(as_of)
    written = Outputs(outputs)
    guard(lambda: run.diff(list(base), list(head), list(maps), list(files), written, fail_on_new, max_records,
                           run_time), written)


@main.command()
@click.option("--pack", "-p", "packs", multiple=True, required=True, metavar="PACK",
              help="A pack file, a folder of packs, or a shipped pack name (repeatable).")
@_map_option
@click.argument("files", nargs=-1, required=True, metavar="[TYPE=]FILE...")
@click.option("--rows", default=5, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Records shown per input, as the rules will see them.")
@_identifier_options
def inspect(packs: tuple[str, ...], maps: tuple[str, ...], files: tuple[str, ...], rows: int,
            reveal_identifiers: bool, key_file: str | None) -> None:
    """Show how the FILES read: per input, the column feeding each field, how many values are
    missing or do not convert (with the first examples and their lines), and the first records
    as the rules will see them. Run it to get a source map right before the first audit.

    \b
    Example:
      protocol-audit inspect --pack ketamine-iv --map acme-ehr.map.yaml Infusions.csv
    """

    guard(lambda: run.inspect(list(packs), list(maps), list(files), rows, reveal_identifiers, key_file))


@main.command()
@click.argument("target", metavar="TARGET")
@click.option("--output", "-o", "outputs", multiple=True, metavar="FILE",
              help="Write the trend: .html (a chart per rule), .md or .json. Repeatable. Default: a summary.")
@click.option("--pack", "-p", "packs", multiple=True, metavar="ID",
              help="Only the rules of this pack (its id) and the audits that judged it. Repeatable.")
def trend(target: str, outputs: tuple[str, ...], packs: tuple[str, ...]) -> None:
    """Show each rule's compliance over the audits archived in TARGET (a SQLite file or a
    postgresql:// URL that audits were given with --archive), oldest first, against its target.

    \b
    Example:
      protocol-audit trend audits.db -o trend.html
    """
    written = Outputs(outputs)
    guard(lambda: run.trend(target, written, list(packs)), written)


@main.command()
@click.argument("packs", nargs=-1, required=True, metavar="PACK...")
@click.option("--output", "-o", "outputs", multiple=True, metavar="FILE",
              help="Write the handbook: .html (self-contained, printable) or .md. Repeatable. Default: Markdown "
                   "on standard output.")
@click.option("--bibliography", is_flag=True,
              help="Only the sources: each one's full reference and what each rule takes from it (Markdown).")
def handbook(packs: tuple[str, ...], outputs: tuple[str, ...], bibliography: bool) -> None:
    """Write the protocol handbook of packs: per rule its severity, what it applies to and requires
    in plain words (generated from the conditions the audit judges), rationale, sources, effective
    dates and examples; then the records read and the bibliography.

    \b
    Example:
      protocol-audit handbook rules/ -o handbook.html
    """
    written = Outputs(outputs)
    guard(lambda: run.handbook(list(packs), written, bibliography), written)


@main.command()
@click.argument("packs", nargs=-1, required=True, metavar="PACK...")
def rules(packs: tuple[str, ...]) -> None:
    """List the rules of packs: id, severity, record type, title and when each applies."""

    guard(lambda: run.rules(list(packs)))


if __name__ == "__main__":
    main()
