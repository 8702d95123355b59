"""The protocol-audit command line: parse arguments, call the engine, render reports, exit."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import math
import os
import signal
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, NoReturn

import click

from engine import reporters
from engine.commands import diff as impact
from engine.commands import packtest
from engine.commands.explain import explain as explain_outcome
from engine.commands.outputs import Outputs, inputs_of
from engine.errors import AuditError, PackError, UsageError
from engine.judge import pipeline
from engine.language.conditions import describe
from engine.language.model import SEVERITIES
from engine.language.values import OutOfRange, in_zone
from engine.packs import is_tests_path, load_packs, orphan_tests
from engine.privacy import KEY_VARIABLE, Pseudonymiser
from engine.reporters import report as report_builder
from engine.reporters.common import printable

EXIT_SUCCESS = 0
EXIT_FINDINGS = 1
EXIT_ERROR = 2
# The reader of our output went away (`... | head -1`): what a tool killed by SIGPIPE reports in
# the shell. Not 0: for audit and test that would claim a verdict the reader never got (a
# `set -o pipefail` CI step would pass); not 2 with a message: nobody is left to read it.
EXIT_CLOSED_PIPE = 128 + 13


class _ReaderGone(Exception):
    """stdout or stderr is a pipe whose reader has gone: a normal end for a command-line tool."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: the same clean-up (worker stopped, no temporary file left)."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _echo(text: str, err: bool = False) -> None:
    """Print one message: every control character of it made visible (an escape sequence from a
    CSV header or a pack could rewrite the user's terminal; a line break could forge a line)."""
    _print(lambda: click.echo(printable(text, absent=""), err=err))


def _echo_lines(lines: Iterable[str]) -> None:
    """Print lines on stdout, each made visible like a message."""
    text = "".join(printable(line, absent="") + "\n" for line in lines)
    _print(lambda: click.echo(text, nl=False))


def _print(write: Callable[[], None]) -> None:
    """Run ``write`` and flush stdout; a closed pipe there is a _ReaderGone, so that only a closed
    stdout or stderr, never the engine's own pipes, ends the run quietly."""
    try:
        write()
        sys.stdout.flush()
    except BrokenPipeError:
        raise _ReaderGone from None


def _silence(*streams: Any) -> None:
    """Point closed pipes at the null device, so the interpreter's last flush does not fail again."""
    for stream in streams:
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a real file (click's test runner)
            continue
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, fd)
        os.close(null)


def _fail(message: str) -> NoReturn:
    try:
        _echo(f"protocol-audit: {message}", err=True)
    except _ReaderGone:
        _silence(sys.stderr)
    sys.exit(EXIT_ERROR)


def _guard(action: Callable[[], int], outputs: Outputs | None = None) -> None:
    """Run a command; every AuditError becomes a clear message and exit 2, never a traceback."""
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: SIGTERM keeps its meaning
        previous = None
    try:
        code = action()
    except PackError as exc:
        for problem in exc.problems:
            _echo(str(problem), err=True)
        count = len(exc.problems)
        files = len({problem.path for problem in exc.problems})
        noun = "file" if any(is_tests_path(problem.path) for problem in exc.problems) else "rule pack"
        _fail(f"{count} problem{'s' if count != 1 else ''} in {files} {noun}{'s' if files != 1 else ''}")
    except AuditError as exc:
        _fail(str(exc))
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, _Terminated) else "interrupted"
        _fail(f"{what}; {outputs.what_was_written() if outputs else 'no report was written'}")
    except _ReaderGone:
        _silence(sys.stdout, sys.stderr)
        sys.exit(EXIT_CLOSED_PIPE)
    except Exception as exc:  # a bug: say so plainly; the traceback is there when asked for
        if os.environ.get("PROTOCOL_AUDIT_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set PROTOCOL_AUDIT_DEBUG=1 for details)")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


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


def _renderer(path: str, max_findings: int) -> reporters.Renderer:
    render: Any = reporters.for_path(path)
    if path.lower().endswith(".md"):  # the one format with an option of its own
        render = functools.partial(render, max_findings=max_findings)
    return render  # type: ignore[no-any-return]


class _Progress:
    """Records read so far, on a terminal only (quiet when piped)."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.shown = False

    def __call__(self, count: int) -> None:
        if self.enabled and count % 10000 == 0:
            click.echo(f"\r{count:,} records read...", err=True, nl=False)
            self.shown = True

    def done(self) -> None:
        if self.shown:
            click.echo("\r" + " " * 40 + "\r", err=True, nl=False)


@contextlib.contextmanager
def _visible_usage_errors() -> Iterator[None]:
    """click's own usage errors quote what was typed (an option, a value): made visible too."""
    try:
        yield
    except click.ClickException as exc:
        # click declares the attribute final; it is only read when click shows the error
        exc.message = printable(exc.message, absent="")  # type: ignore[misc]
        raise


class _Commands(click.Group):
    """The command group; click's parsing and the commands' parameter errors go through
    _visible_usage_errors."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        with _visible_usage_errors():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _visible_usage_errors():
            return super().invoke(ctx)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version=report_builder.tool_version(), prog_name="protocol-audit")
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


def _pseudonymiser(reveal_identifiers: bool, key_file: str | None) -> Pseudonymiser | None:
    """The run's pseudonym key, or None when identifiers are revealed; a random key is announced."""
    if reveal_identifiers:
        return None
    pseudonymise = Pseudonymiser.from_settings(key_file)
    if pseudonymise.random:
        _echo(f"protocol-audit: patient identifiers are pseudonymised with a random key for this run; "
              f"set {KEY_VARIABLE} or --key-file for pseudonyms that stay the same between runs", err=True)
    return pseudonymise


@main.command()
@click.option("--pack", "-p", "packs", multiple=True, required=True, metavar="PACK",
              help="A pack file, a folder of packs, or a shipped pack name (repeatable).")
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
@click.option("--max-findings", default=20, show_default=True, metavar="N",
              type=click.IntRange(min=0), help="Findings listed per rule in a Markdown report.")
@_identifier_options
def audit(packs: tuple[str, ...], files: tuple[str, ...], outputs: tuple[str, ...], fail_on: str,
          as_of: str | None, group_by: tuple[str, ...], max_findings: int, reveal_identifiers: bool,
          key_file: str | None) -> None:
    """Judge every rule of the packs on every record of the FILES.

    A FILE binds to a record type as TYPE=FILE, by its name (sessions.csv -> session),
    or by a record_type column. Without -o, a summary is printed. Patient identifiers are
    pseudonymised with a keyed hash unless --reveal-identifiers is given; with the same key,
    pseudonyms (and so reports) are the same in every run.

    \b
    Example:
      protocol-audit audit --pack ketamine-iv samples/sessions.csv -o report.json -o findings.csv
    """
    run_time = _as_of(as_of)
    written = Outputs(outputs)

    def action() -> int:
        renderers = [(path, _renderer(path, max_findings)) for path in outputs]
        written.check(inputs_of(files, packs, key_file))
        loaded = load_packs(list(packs))
        pseudonymise = _pseudonymiser(reveal_identifiers, key_file)
        progress = _Progress()
        try:
            result, stats = pipeline.run(loaded, list(files), progress=progress, group_by=list(group_by),
                                         pseudonymise=pseudonymise, reveal=reveal_identifiers)
        finally:
            progress.done()
        report = report_builder.build(result, stats, loaded, run_time, fail_on)
        written.write(renderers, report)
        if outputs:
            summary = report["summary"]
            _echo(f"{summary['records_read']} records read, {summary['records_rejected']} rejected, "
                  f"{summary['findings']} findings; wrote {', '.join(outputs)}", err=True)
        else:  # the terminal report makes its own values visible
            _print(lambda: reporters.get("txt")(report, sys.stdout))
        return EXIT_FINDINGS if report_builder.failing_findings(report, fail_on) else EXIT_SUCCESS

    _guard(action, written)


@main.command()
@click.option("--pack", "-p", "packs", multiple=True, required=True, metavar="PACK",
              help="A pack file, a folder of packs, or a shipped pack name (repeatable).")
@click.option("--rule", "rule_id", required=True, metavar="ID", help="The rule to explain.")
@click.option("--record", "record_key", required=True, metavar="KEY", help="The key of the judged record.")
@click.argument("files", nargs=-1, required=True, metavar="[TYPE=]FILE...")
@_identifier_options
def explain(packs: tuple[str, ...], rule_id: str, record_key: str, files: tuple[str, ...],
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

    def action() -> int:
        loaded = load_packs(list(packs))
        lines, agrees = explain_outcome(loaded, rule_id, record_key, list(files),
                                        _pseudonymiser(reveal_identifiers, key_file))
        _echo_lines(lines)
        if not agrees:
            _echo("protocol-audit: the rule engine and the explanation disagree: please report this", err=True)
            return EXIT_ERROR
        return EXIT_SUCCESS

    _guard(action)


@main.command()
@click.argument("packs", nargs=-1, required=True, metavar="PACK...")
def validate(packs: tuple[str, ...]) -> None:
    """Check rule packs; every problem is printed as path:line:column: message (exit 2)."""

    def action() -> int:
        for pack in load_packs(list(packs)):
            count = len(pack.rules)
            _echo(f"{pack.path}: ok ({pack.id} {pack.version}, {count} rule{'s' if count != 1 else ''})")
        return EXIT_SUCCESS

    _guard(action)


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

    def action() -> int:
        if min_coverage is not None and math.isnan(min_coverage):
            raise UsageError("--min-coverage must be a number from 0 to 100")
        for ref in packs:  # scenarios whose pack was renamed or removed would silently stop running
            if Path(ref).is_dir() and (orphans := orphan_tests(Path(ref))):
                raise UsageError(f"{orphans[0]}: scenarios with no pack of that name beside them "
                                 f"(rename them after their pack, or remove them)")
        failed = below = 0
        for pack in load_packs(list(packs)):
            result = packtest.run_pack(pack)
            _echo_lines(packtest.report_lines(result, min_coverage))
            failed += len(result.failed)
            below += len(packtest.below_minimum(result, min_coverage))
        if failed or below:
            reasons = [f"{failed} case{'s' if failed != 1 else ''} failed"] if failed else []
            reasons += [f"{below} rule{'s' if below != 1 else ''} below {min_coverage:g}% coverage"] if below else []
            _echo(f"protocol-audit: {'; '.join(reasons)}", err=True)
            return EXIT_FINDINGS
        return EXIT_SUCCESS

    _guard(action)


@main.command("diff")
@click.option("--base", "base", multiple=True, required=True, metavar="PACK",
              help="The rules before the change: a pack file, folder, shipped name or git:REV:PATH (repeatable).")
@click.option("--head", "head", multiple=True, required=True, metavar="PACK",
              help="The rules after the change (repeatable).")
@click.argument("files", nargs=-1, required=True, metavar="[TYPE=]FILE...")
@click.option("--output", "-o", "outputs", multiple=True, metavar="FILE",
              help="Write the diff: .json or .md (a pull-request comment). Repeatable.")
@click.option("--fail-on-new", type=click.Choice(SEVERITIES), metavar="SEVERITY",
              help="Exit 1 when the change newly flags a record under a rule of this severity or worse.")
@click.option("--max-records", default=20, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Records listed per rule and direction in the terminal and Markdown forms.")
@click.option("--as-of", "as_of", metavar="DATETIME", help="The run's time (ISO 8601). Default: now.")
def diff_command(base: tuple[str, ...], head: tuple[str, ...], files: tuple[str, ...], outputs: tuple[str, ...],
                 fail_on_new: str | None, max_records: int, as_of: str | None) -> None:
    """Audit the same records with two versions of the rules and show what changes.

    Per rule: added, removed or changed (which parts), failures and compliance before and
    after, and the records newly flagged and no longer flagged with their source lines.

    \b
    Example (in CI, against the merge base):
      protocol-audit diff --base git:origin/main:rules/ --head rules/ exports/*.csv -o impact.md
    """
    run_time = _as_of(as_of)
    written = Outputs(outputs)

    def action() -> int:
        writers = []
        for path in outputs:
            ext = os.path.splitext(path)[1].lower()
            if ext not in (".json", ".md"):
                raise UsageError(f'cannot write a diff as "{path}": use .json or .md')
            render = reporters.get("json") if ext == ".json" else \
                functools.partial(impact.render_markdown, max_records=max_records)
            writers.append((path, render))
        written.check(inputs_of(files, (*base, *head)))
        result = impact.compare(load_packs(list(base)), load_packs(list(head)), list(files), run_time,
                                fail_on_new)
        written.write(writers, result)
        if outputs:
            _echo(f"protocol-audit diff: {impact.headline(result)}; wrote {', '.join(outputs)}", err=True)
        else:
            _echo_lines(impact.lines(result, max_records))
        new = result["summary"]["newly_flagged_at_or_above"]
        return EXIT_FINDINGS if fail_on_new and new else EXIT_SUCCESS

    _guard(action, written)


@main.command()
@click.argument("packs", nargs=-1, required=True, metavar="PACK...")
def rules(packs: tuple[str, ...]) -> None:
    """List the rules of packs: id, severity, record type, title and when each applies."""

    def action() -> int:
        for pack in load_packs(list(packs)):
            _echo(f"{pack.id} {pack.version} - {pack.title} ({pack.path})")
            width = max((len(r.id) for r in pack.rules), default=2)
            for rule in pack.rules:
                _echo(f"  {rule.id:<{width}}  {rule.severity:<8}  {rule.for_type:<10}  {rule.title}")
                _echo(f"  {'':<{width}}  applies when: {describe(rule.when)}")
        return EXIT_SUCCESS

    _guard(action)


if __name__ == "__main__":
    main()
