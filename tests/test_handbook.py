"""The handbook (protocol-audit handbook): a pack's rules in plain words generated from the
conditions, with sources, examples and the bibliography; the packs' sources: section and each rule's
sources: mapping, validated at their positions; the shipped handbooks checked in under docs/."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli import main
from engine import handbook
from engine.packs import load_pack_bytes, load_packs
from tests.helpers import pack_text
from tests.test_loader import problems

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

SOURCES = """\
sources:
  LABEL: {ref: "SPRAVATO prescribing information, Janssen", url: "https://example.org/spl", evidence: primary}
  SOP: {ref: "Clinic SOP KET-IV-003 rev 4", evidence: local}
"""

RULES = """\
  - id: DOSE
    title: dose per kg
    severity: major
    for: session
    when: {all: [{route: IV}, {not: {escort_present: false}}]}
    require:
      any:
        - dose_mg: {between: [0.1, 1.0]}
        - all: [{devices: {one_of: [2, 3]}}, {note: {matches: "ok.*"}}, {clinician: {present: true}}]
    message: "dose {dose_mg}"
    rationale: "Standard <b>0.5</b> mg/kg."
    sources:
      LABEL: "Each device delivers 28 mg."
      SOP: "The range is the clinic's choice."
    tests:
      - {record: {route: IV, dose_mg: 0.5, escort_present: true}, expect: pass}
  - id: GAP
    title: time since the last session
    severity: minor
    for: session
    effective: {from: 2026-02-01}
    when: {route: IV}
    require:
      since_previous: {of: session, where: {route: IV}, at_least: 40h}
    tests:
      - {record: {route: IV}, time: "2026-03-01T09:00:00", expect: pass}
  - id: WEEK
    severity: minor
    for: session
    require:
      count: {of: session, within: {before: 6d}, at_most: 0}
"""


def text(render: object, packs: list) -> str:  # type: ignore[type-arg]
    out = io.StringIO()
    render(packs, out)  # type: ignore[operator]
    return out.getvalue()


@pytest.fixture()
def pack() -> object:
    return load_pack_bytes((pack_text(RULES).replace("records:\n", SOURCES + "records:\n", 1)).encode(),
                           "pack.yaml")


def test_rules_read_in_plain_words_generated_from_their_conditions(pack: object) -> None:
    book = text(handbook.render_markdown, [pack])
    for words in ['- `route` is "IV"',
                  "- not: `escort_present` is false",
                  "- at least one of:",
                  "  - `dose_mg` is between 0.1 and 1 (both included)",
                  "  - all of:",
                  "    - `devices` is one of 2 or 3",
                  '    - `note` matches the pattern "ok.\\*"',
                  "    - `clinician` is documented",
                  "- at least 40 hours have passed since the patient's previous `session` record where `route` "
                  'is "IV" (holds when there is none)',
                  "- the patient has no other `session` records within 6 days before this record's time",
                  "- every `session` record",  # WEEK has no when
                  "In force: 2026-02-01 to now."]:
        assert words in book, words
    # GAP's effective dates are said once, not as conditions on session_start among what it applies to
    gap = book[book.index("## GAP"):book.index("## WEEK")]
    assert "session_start" not in gap.split("**Requires**")[0]


def test_sources_examples_and_bibliography(pack: object) -> None:
    book = text(handbook.render_markdown, [pack])
    assert "- LABEL: Each device delivers 28 mg." in book
    assert "| passes | route: IV, dose\\_mg: 0.5, escort\\_present: true | — |" in book
    assert "(at 2026-03-01T09:00:00)" in book
    assert "- **LABEL** (primary) SPRAVATO prescribing information, Janssen https\\://example.org/spl. " \
           "Cited by: DOSE." in book
    sources = text(handbook.render_bibliography, [pack])
    assert "### SOP: Clinic SOP KET-IV-003 rev 4" in sources and "Evidence: local." in sources
    assert "- DOSE (dose per kg): The range is the clinic's choice." in sources


def test_the_html_handbook_is_self_contained_and_escapes_the_pack(pack: object) -> None:
    page = text(handbook.render_html, [pack])
    assert "<script" not in page and "default-src 'none'" in page
    assert "Standard &lt;b&gt;0.5&lt;/b&gt; mg/kg." in page
    assert "<li><code>dose_mg</code> is between 0.1 and 1 (both included)</li>" in page
    assert 'id="test-source-LABEL"' in page and 'href="#test-source-LABEL"' in page


@pytest.mark.parametrize(("body", "expected"), [
    ('    sources: {LABLE: "x"}\n',
     'pack.yaml:33:15: source "LABLE" is not in the pack\'s sources (did you mean "LABEL"?)'),
    ('    sources: {LABEL: ""}\n',
     'pack.yaml:33:22: say what the rule takes from source "LABEL" (a quote or paraphrase)'),
    ("    sources: [LABEL]\n", "pack.yaml:33:14: a rule's sources must be a mapping of source id: what the rule takes "
                             "from it"),
])
def test_a_rules_sources_are_checked_against_the_packs(body: str, expected: str) -> None:
    text_ = pack_text("  - id: R1\n    severity: major\n    for: session\n    require: {route: IV}\n" + body)
    text_ = text_.replace("records:\n", SOURCES + "records:\n", 1)
    assert problems(text_) == [expected]


@pytest.mark.parametrize(("sources", "expected"), [
    ("sources:\n  S1: {ref: x, evidence: primray}\n", 'pack.yaml:6:26: unknown evidence "primray" (did you mean '
                                                      '"primary"?)'),
    ("sources:\n  S1: {url: x}\n", 'pack.yaml:6:7: source "S1" is missing "ref"'),
    ("sources:\n  S1: {ref: x, page: 3}\n", 'pack.yaml:6:16: unknown key "page" in source "S1"'),
    ("sources: []\n",
     "pack.yaml:5:10: sources must be a mapping of id: {ref: full reference, url: ..., evidence: ...}"),
    ("sources:\n  S 1: {ref: x}\n", 'pack.yaml:6:3: source id "S 1" may use letters, digits, "-", "_" and "." only'),
])
def test_the_packs_sources_are_checked(sources: str, expected: str) -> None:
    text_ = pack_text("  - id: R1\n    severity: major\n    for: session\n    require: {route: IV}\n")
    assert problems(text_.replace("records:\n", sources + "records:\n", 1)) == [expected]


def test_a_rule_citing_a_pack_without_sources_is_told_so() -> None:
    text_ = pack_text("  - id: R1\n    severity: major\n    for: session\n    require: {route: IV}\n"
                      '    sources: {S1: "x"}\n')
    assert problems(text_) == ["pack.yaml:30:15: source \"S1\" is not in the pack's sources (the pack declares no "
                               "sources:)"]


@pytest.mark.parametrize(("args", "message"), [
    (["-o", "book.pdf"], 'cannot write a handbook as "book.pdf": use .md or .html'),
    (["--bibliography", "-o", "sources.html"], 'cannot write the bibliography as "sources.html": use .md'),
])
def test_unknown_outputs_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["handbook", "ketamine-iv", *[str(tmp_path / a) if "." in a else a
                                                                   for a in args]])
    assert result.exit_code == 2 and message.split('"')[0] in result.stderr, result.stderr


# ---- the shipped packs' handbooks, checked in ----

CHECKED_IN = {"handbook.md": ["handbook", "rules/", "-o"], "handbook.html": ["handbook", "rules/", "-o"],
              "clinical-sources.md": ["handbook", "rules/", "--bibliography", "-o"]}


@pytest.mark.parametrize("name", sorted(CHECKED_IN))
def test_the_checked_in_handbooks_are_the_shipped_packs_own(tmp_path: Path, name: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/ holds the handbook of the shipped packs as this version writes it; regenerate with
    `protocol-audit handbook rules/ -o docs/handbook.md -o docs/handbook.html` and
    `protocol-audit handbook rules/ --bibliography -o docs/clinical-sources.md` (from the repository root)."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / name
    result = CliRunner().invoke(main, [*CHECKED_IN[name], str(out)])
    assert result.exit_code == 0, result.stderr
    assert out.read_text(encoding="utf-8") == (DOCS / name).read_text(encoding="utf-8"), \
        f"docs/{name} is stale: regenerate it (see this test's docstring)"


def test_every_shipped_rule_rests_on_a_source() -> None:
    """Each shipped rule names at least one of its pack's sources and says what it takes from it."""
    for pack in load_packs([str(ROOT / "rules")]):
        assert pack.sources, pack.id
        for rule in pack.rules:
            assert rule.sources, f"{pack.id} {rule.id} cites no source"


@pytest.mark.parametrize(("field", "expected"), [
    ("      clinician: {type: number, staff: true}\n",
     'pack.yaml:19:40: staff marks a staff identifier: "clinician" is number, not a string'),
    ("      clinician: {type: string, staff: yes please}\n", "pack.yaml:19:40: staff must be true or false"),
])
def test_the_staff_flag_is_checked(field: str, expected: str) -> None:
    text_ = pack_text("  - id: R1\n    severity: major\n    for: session\n    require: {route: IV}\n")
    assert problems(text_.replace("      clinician: string\n", field, 1)) == [expected]
