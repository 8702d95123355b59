"""The HTML report in a real browser: headless Chromium, driven by Playwright, with no network.

The report must work from a file:// URL alone: every request that is not a file:// one is
aborted and fails the test. The filters are checked against the JSON report of the same run,
and record values that look like HTML, script or spreadsheet formulas must show as text.

Skipped (the whole module) only when Playwright is not installed or no Chromium executable is
found; ``.ci/run`` installs Debian's chromium. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import re
import shutil
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli import main
from tests.helpers import pack_text

try:
    from playwright.sync_api import (
        BrowserContext,
        Dialog,
        Page,
        Playwright,
        Request,
        Route,
        WebSocketRoute,
        sync_playwright,
    )
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("playwright is not installed (pip install '.[test]'): browser tests skipped",
                allow_module_level=True)


def _find_chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _find_chromium()
if CHROMIUM is None:  # pragma: no cover - depends on the environment
    pytest.skip("no Chromium executable (/usr/bin/chromium or chromium on PATH; apt-get install chromium): "
                "browser tests skipped", allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
ARTIFACTS = ROOT / "tests" / "artifacts"
AS_OF = "2026-11-26T00:00:00+00:00"

# Headless, and nothing that reaches for the network on its own (updates, sync, QUIC probes).
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]

# Schemes that never leave the machine; anything else is a network request the report must not make.
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")

ROWS = "#findings tr.finding"


@dataclass
class Watched:
    """A page of a fresh browser profile, and everything it did that a report must not do."""

    page: Page
    console: list[tuple[str, str]] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def console_errors(self) -> list[str]:
        return [text for kind, text in self.console if kind == "error"]

    def assert_clean(self) -> None:
        assert not self.network, f"the report tried to reach the network: {self.network}"
        assert not self.page_errors, f"uncaught errors in the page: {self.page_errors}"
        assert not self.console_errors(), f"console errors: {self.console_errors()}"
        assert not self.dialogs, f"the page opened dialogs: {self.dialogs}"


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright: Playwright, tmp_path: Path) -> Iterator[Callable[..., Watched]]:
    """Opens a page in a fresh Chromium profile that may read file:// URLs and nothing else."""
    contexts: list[BrowserContext] = []

    def launch(**options: Any) -> Watched:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / f"chromium-profile-{len(contexts)}"),  # a fresh profile every time
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport=options.pop("viewport", {"width": 1280, "height": 900}), service_workers="block", **options,
        )
        contexts.append(context)
        page = context.pages[0] if context.pages else context.new_page()
        seen = Watched(page)

        def route(route: Route) -> None:
            url = route.request.url
            if url.startswith("file:"):
                route.continue_()
            else:
                seen.network.append(url)
                route.abort("blockedbyclient")

        def websocket(ws: WebSocketRoute) -> None:  # never connected to a server: no traffic leaves
            seen.network.append(ws.url)
            ws.close()

        def request(req: Request) -> None:  # whatever the router did not see (it does not see all schemes)
            if not req.url.startswith(LOCAL_SCHEMES) and req.url not in seen.network:
                seen.network.append(req.url)

        def dialog(d: Dialog) -> None:
            seen.dialogs.append(f"{d.type}: {d.message}")
            d.dismiss()

        context.route("**/*", route)
        context.route_web_socket(re.compile(".*"), websocket)
        context.on("request", request)
        page.on("console", lambda msg: seen.console.append((msg.type, msg.text)))
        page.on("pageerror", lambda exc: seen.page_errors.append(str(exc)))
        page.on("dialog", dialog)
        return seen

    try:
        yield launch
    finally:
        for context in contexts:
            context.close()


def _audit(*args: str) -> None:
    result = CliRunner().invoke(main, ["audit", *args])
    assert result.exit_code in (0, 1), f"exit {result.exit_code}: {result.output}"


def _open(watched: Watched, report: Path) -> Page:
    page = watched.page
    page.goto(report.as_uri(), wait_until="load")
    page.wait_for_timeout(250)  # let late handlers (image errors, timers) run before judging
    return page


PAGE = 200  # rows report.js puts in the document at a time


def _rows(page: Page) -> dict[str, Any]:
    """The finding rows in the document, and how many the browser actually lays out."""
    rows: dict[str, Any] = page.evaluate(
        """(selector) => {
            const rows = [...document.querySelectorAll(selector)];
            return {
                shown: rows.map(r => [r.dataset.rule, r.dataset.severity, r.cells[3].textContent,
                                      r.cells[5].textContent]),
                laid_out: rows.filter(r => r.getClientRects().length > 0).length,
            };
        }""",
        ROWS,
    )
    return rows


def _count_text(page: Page) -> str:
    text = " ".join(page.locator("#finding-count").inner_text().split())
    return re.sub(r"(?<=\d)[,\u00a0\u202f ](?=\d{3}\b)", "", text)  # 1,076 reads as 1076


def _check_shown(page: Page, expected: list[dict[str, Any]], total: int, rule: str = "",
                 show_all: bool = False) -> None:
    """The findings matching the filters are ``expected``: the first page of them is shown
    (or all, after "Show all"), each of the right rule and severity, and the count says so."""
    if show_all and len(expected) > PAGE:
        page.click("#show-all")
    rows = _rows(page)
    shown = rows["shown"]
    visible = len(expected) if show_all else min(PAGE, len(expected))
    where = f"rule={rule!r}, {len(expected)} expected"
    assert len(shown) == visible, f"{where}: {len(shown)} rows shown, expected {visible}"
    assert rows["laid_out"] == visible, f"{where}: {rows['laid_out']} rows laid out, {visible} in the table"
    allowed = Counter((f["rule"], f["severity"], f["record_key"]) for f in expected)
    assert not Counter((r, s, k) for r, s, k, _ in shown) - allowed, f"{where}: rows that do not match shown"
    if show_all:
        assert Counter((r, s, k) for r, s, k, _ in shown) == allowed, f"{where}: not every matching finding shown"
    assert f"{len(expected)} of {total} findings match; {visible} shown" in _count_text(page), (
        f"{where}: #finding-count reads {_count_text(page)!r}")
    more = page.locator("#show-more")
    assert more.is_visible() == (visible < len(expected)), f"{where}: 'Show more' shown wrongly"


def _screenshot(page: Page, name: str, tmp_path: Path, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    png = page.screenshot(full_page=full_page, timeout=120_000)
    (ARTIFACTS / name).write_bytes(png)
    (tmp_path / name).write_bytes(png)


def test_sample_report_in_browser(browser: Callable[..., Watched], tmp_path: Path) -> None:
    html, js = tmp_path / "report.html", tmp_path / "report.json"
    _audit("--pack", "ketamine-iv", "--pack", "esketamine-rems", *sorted(str(p) for p in SAMPLES.glob("*.csv")),
           "--as-of", AS_OF, "-o", str(html), "-o", str(js))
    report = json.loads(js.read_text(encoding="utf-8"))
    findings = report["findings"]
    total = len(findings)
    assert total == report["summary"]["findings"] and total > 0

    watched = browser()
    page = _open(watched, html)
    watched.assert_clean()
    # The top of the page as opened; the full-page shot is taken below, with one rule shown.
    _screenshot(page, "report-top.png", tmp_path, full_page=False)

    # Before any filter: the first page of all findings, in the report's order.
    _check_shown(page, findings, total)
    assert [k for _, _, k, _ in _rows(page)["shown"]] == [f["record_key"] for f in findings[:PAGE]]
    page.click("#show-more")
    assert len(_rows(page)["shown"]) == min(total, 2 * PAGE)

    # The filters offer "all" first, then every rule and severity that has findings.
    rule_options = page.eval_on_selector_all("#filter-rule option", "os => os.map(o => o.value)")
    severity_options = page.eval_on_selector_all("#filter-severity option", "os => os.map(o => o.value)")
    assert rule_options[:1] == [""] and severity_options[:1] == [""], (rule_options[:3], severity_options[:3])
    assert {f["rule"] for f in findings} <= set(rule_options), "a rule with findings is missing from #filter-rule"
    assert {f["severity"] for f in findings} <= set(severity_options), "a severity is missing from #filter-severity"

    # The rule with the most failures, its id unique across the packs and nothing waived: its
    # rows are exactly the JSON report's findings of that rule.
    ids = Counter(r["id"] for r in report["rules"])
    candidates = [r for r in report["rules"] if r["failed"] > 0 and r["waived"] == 0 and ids[r["id"]] == 1]
    rule = max(candidates, key=lambda r: (r["failed"], r["id"]))
    rule_id, severity = rule["id"], rule["severity"]
    of_rule = [f for f in findings if f["rule"] == rule_id]
    assert len(of_rule) == rule["failed"]

    page.select_option("#filter-rule", rule_id)
    _check_shown(page, of_rule, total, rule=rule_id, show_all=True)
    _screenshot(page, "report.png", tmp_path)

    # Sorting by time (twice: ascending, then descending) orders the shown rows by instant.
    page.click("#findings th:nth-child(6) button")
    times = [t for _, _, _, t in _rows(page)["shown"]]
    expected_order = sorted((f["time"] for f in of_rule), key=_instant)
    assert [_instant(t) for t in times] == [_instant(t) for t in expected_order]
    page.click("#findings th:nth-child(6) button")
    assert [_instant(t) for t, in ((t,) for _, _, _, t in _rows(page)["shown"])] == \
        [_instant(t) for t in reversed(expected_order)]
    assert page.get_attribute("#findings th:nth-child(6)", "aria-sort") == "descending"

    # The rule and its own severity: the same rows; the rule and another severity: none.
    page.select_option("#filter-severity", severity)
    _check_shown(page, of_rule, total, rule=rule_id, show_all=True)
    by_severity = report["summary"]["by_severity"]
    other = max((s for s in by_severity if s != severity and by_severity[s] > 0), key=lambda s: by_severity[s])
    page.select_option("#filter-severity", other)
    _check_shown(page, [], total, rule=rule_id)

    # A severity alone, then no filter again (a filter change goes back to the first page).
    page.select_option("#filter-rule", "")
    of_other = [f for f in findings if f["severity"] == other]
    assert len(of_other) == by_severity[other]
    _check_shown(page, of_other, total)
    _check_shown(page, of_other, total, show_all=True)
    page.select_option("#filter-severity", "")
    _check_shown(page, findings, total)

    watched.assert_clean()


def _instant(time: str) -> dt.datetime:
    return dt.datetime.fromisoformat(time).astimezone(dt.UTC)


# Values a hostile or careless export could hold; each must show as text and run nothing.
PAYLOADS = [
    "<script>window.__pwned=1</script>",
    '"><img src=x onerror="window.__pwned=1">',
    '=HYPERLINK("http://x")',
    "</script><script>window.__pwned=1</script>",
    "' autofocus onfocus='window.__pwned=1' x='",
]
HOSTILE_KEY = 'S-0" autofocus onfocus="window.__pwned=1'  # a record key lands in cells, perhaps attributes

HOSTILE_PACK = pack_text("""\
  - id: ESC-01
    title: Escort at discharge
    severity: critical
    for: session
    require: {escort_present: true}
    message: "{clinician} discharged"
  - id: NOTE-01
    title: Note reviewed
    severity: minor
    for: session
    require: {note: {one_of: [reviewed]}}
    message: "note: {note}"
  - id: STAFF-01
    title: Credentialed clinician
    severity: major
    for: session
    require: {clinician: {one_of: [CL-001]}}
    message: "{clinician} is not credentialed"
""", pack="hostile")


# The report's Content-Security-Policy would stop injected script on its own; with it bypassed,
# the test shows that escaping alone keeps every value text (a policy is a second line, not the first).
@pytest.mark.parametrize("bypass_csp", [False, True], ids=["with-csp", "csp-bypassed"])
def test_hostile_values_render_as_text(browser: Callable[..., Watched], tmp_path: Path, bypass_csp: bool) -> None:
    (tmp_path / "pack.yaml").write_text(HOSTILE_PACK, encoding="utf-8")
    with open(tmp_path / "sessions.csv", "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["session_id", "patient_id", "session_start", "escort_present", "clinician", "note"])
        for n, payload in enumerate(PAYLOADS):
            key = HOSTILE_KEY if n == 0 else f"S-{n}"
            writer.writerow([key, f"P-{n}", f"2026-03-0{n + 1} 09:00", "no", payload,
                             PAYLOADS[(n + 1) % len(PAYLOADS)]])
    html, js = tmp_path / "report.html", tmp_path / "report.json"
    _audit("--pack", str(tmp_path / "pack.yaml"), str(tmp_path / "sessions.csv"), "--as-of", AS_OF,
           "-o", str(html), "-o", str(js))

    # The payloads did reach the report's messages and evidence, so the browser sees them.
    report = json.loads(js.read_text(encoding="utf-8"))
    messages = " ".join(f["message"] for f in report["findings"])
    evidence = {value for f in report["findings"] for value in f["evidence"].values()}
    for payload in PAYLOADS:
        assert payload in messages and payload in evidence, payload

    watched = browser(bypass_csp=bypass_csp)
    page = _open(watched, html)
    # Run every filter choice too: a filter that rebuilds rows from data must not inject either.
    for select in ("#filter-rule", "#filter-severity"):
        for value in page.eval_on_selector_all(f"{select} option", "os => os.map(o => o.value)"):
            page.select_option(select, value)
        page.select_option(select, "")
    page.wait_for_timeout(250)

    assert page.evaluate("typeof window.__pwned") == "undefined", "a record value ran as script"
    watched.assert_clean()
    injected = page.evaluate("""() => [
        ...document.querySelectorAll('img[src="x"], [onerror], [onfocus], [onload], [autofocus]'),
        ...[...document.scripts].filter(s => s.type !== 'application/json' && s.textContent.includes('__pwned')),
    ].map(e => e.outerHTML)""")
    # Values travel to the page script in one JSON data block, which the browser never runs.
    assert page.eval_on_selector_all("script", "ss => ss.map(s => s.type)") == ["application/json", ""]
    assert injected == [], f"record values became elements: {injected}"
    assert page.locator('a[href*="http://x"]').count() == 0, "a formula became a link"
    shown = page.locator("#findings").text_content() or ""
    for payload in [*PAYLOADS, HOSTILE_KEY]:
        assert payload in shown, f"{payload!r} is not shown as text in #findings"
    assert page.locator(ROWS).count() == len(report["findings"])
    # The data attributes the page script sets from values round-trip, quotes and all.
    assert page.locator(ROWS).first.get_attribute("data-rule") in {"ESC-01", "NOTE-01", "STAFF-01"}
    assert HOSTILE_KEY in page.eval_on_selector_all(ROWS, "rows => rows.map(r => r.cells[3].textContent)")


A4 = {"width": 794, "height": 1123}  # an A4 page at 96 dpi, the size a director prints


def test_the_executive_summary_is_the_first_printed_page(browser: Callable[..., Watched], tmp_path: Path) -> None:
    """The page opens with the executive summary, not hashes: printed, it fits the first A4 page, and the
    rules below target are ranked furthest first, as the JSON report's rates and targets order them."""
    html, js = tmp_path / "report.html", tmp_path / "report.json"
    _audit("--pack", "ketamine-iv", "--pack", "esketamine-rems", *sorted(str(p) for p in SAMPLES.glob("*.csv")),
           "--as-of", AS_OF, "-o", str(html), "-o", str(js))
    report = json.loads(js.read_text(encoding="utf-8"))
    watched = browser(viewport=A4)
    page = _open(watched, html)
    page.emulate_media(media="print")
    watched.assert_clean()
    order = page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent)")
    assert order[0] == "Executive summary" and order.index("Audit provenance") > order.index("Executive summary")
    bottom = page.eval_on_selector("#executive", "e => e.getBoundingClientRect().bottom + window.scrollY")
    assert bottom <= A4["height"], f"the executive summary ends at {bottom}px, past the first page"
    _screenshot(page, "report-print-first-page.png", tmp_path, full_page=False)
    shown = page.eval_on_selector_all(".executive-below tbody tr td:first-child", "ts => ts.map(t => t.textContent)")
    below = sorted((r for r in report["rules"] if r["status"] == "not met"),
                   key=lambda r: (r["compliance_rate"] - r["target"], -(r["patients_affected"] or 0), r["id"]))
    assert [text.split(" ")[0] for text in shown] == [r["id"] for r in below[:len(shown)]] and shown
