"""The SQL-on-FHIR view engine: problems in views, reference keys, the compiled subset against fhirpathpy, bounds."""

from __future__ import annotations

import datetime
import random
import time
from typing import Any

import pytest

from engine.inputs.fhir_view import ResourceError, ViewError, compile_view
from engine.inputs.fhir_view_functions import reference_key


def _view(*columns: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resource": "Observation", "select": [{"column": list(columns)}], **extra}


def _problems(view: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ViewError) as caught:
        compile_view(view)
    return caught.value.problems


@pytest.mark.parametrize(("view", "expected"), [
    pytest.param({}, [(("resource",), "resource is required (the FHIR resource type the view reads)"),
                      (("select",), "select is required")], id="empty"),
    pytest.param({"resource": "Observaton", "selct": []},
                 [(("selct",), 'unknown key "selct" in the view (did you mean "select"?)'),
                  (("resource",), 'unknown FHIR R4 resource type "Observaton" (did you mean "Observation"?)'),
                  (("select",), "select is required")], id="typos"),
    pytest.param(_view({"name": "a", "path": "value.ofType(Quantity).value.frist()"}),
                 [(("select", 0, "column", 0, "path"),
                   'unknown FHIRPath function "frist()" (did you mean "first()"?)')], id="unknown-function"),
    pytest.param(_view({"name": "a", "path": "subject..reference"}),
                 [(("select", 0, "column", 0, "path"),
                   'FHIRPath "subject..reference" does not parse at character 9: extraneous input \'.\'')],
                 id="syntax-position"),
    pytest.param(_view({"name": "a", "path": "id.where("}),
                 [(("select", 0, "column", 0, "path"),
                   "FHIRPath \"id.where(\" does not parse at character 10: mismatched input '<EOF>'")],
                 id="unfinished"),
    pytest.param(_view({"name": "a", "path": "id ) + 1"}),
                 [(("select", 0, "column", 0, "path"),
                   "FHIRPath \"id ) + 1\" does not parse at character 4: mismatched input ')' expecting <EOF>")],
                 id="trailing-text"),
    pytest.param(_view({"name": "a", "path": "id"}, {"path": "status"}, {"name": "a", "path": "%lonic"}),
                 [(("select", 0, "column", 1, "name"), "a column needs a name"),
                  (("select", 0, "column", 2, "path"), 'unknown constant "%lonic" (did you mean "%loinc"?)')],
                 id="column-problems"),
    pytest.param(_view({"name": "a", "path": "id"}, {"name": "a", "path": "status"}),
                 [(("select",), 'column "a" is defined twice')], id="duplicate-column"),
    pytest.param(_view({"name": "a", "path": "id", "colection": True}),
                 [(("select", 0, "column", 0, "colection"), 'unknown key "colection" in a column (did you mean '
                                                            '"collection"?)')], id="unknown-column-key"),
    pytest.param({"resource": "Patient", "where": [{"path": "name.family"}], "select": [{"column": [
        {"name": "a", "path": "id"}]}]},
                 [(("where", 0, "path"), 'a where path must give a boolean; "name.family" gives string')],
                 id="where-not-boolean"),
    pytest.param({"resource": "Patient", "select": [{"unionAll": [{"column": [{"name": "a", "path": "id"}]},
                                                                   {"column": [{"name": "b", "path": "id"}]}]}]},
                 [(("select", 0, "unionAll", 1), "unionAll branches must have the same columns in the same order: "
                                                 "['b'] differs from ['a']")], id="union-mismatch"),
    pytest.param(_view({"name": "a", "path": "id"}, constant=[{"name": "d", "valueDate": "nope"}, {"name": "n"}]),
                 [(("constant", 0, "valueDate"), 'constant "d": "nope" is not a FHIR date'),
                  (("constant", 1), 'constant "n" needs exactly one value[x] (valueString, valueInteger...)')],
                 id="constants"),
    pytest.param(_view({"name": "a", "path": "code.text.matches('(a)\\\\1')"}),
                 [(("select", 0, "column", 0, "path"), '"matches()": regular expression "(a)\\1": back-reference '
                                                       '"\\1" is not supported (RE2 has no back-references)')],
                 id="regex"),
    pytest.param(_view({"name": "a", "path": "id.substring(1, 2, 3)"}),
                 [(("select", 0, "column", 0, "path"), '"substring()" takes 1 or 2 argument(s), not 3')], id="arity"),
    pytest.param({"resource": "Patient", "select": [{"forEach": "name", "forEachOrNull": "name", "column": []}]},
                 [(("select", 0), "a select takes one of forEach, forEachOrNull and repeat, not forEach and "
                                  "forEachOrNull")], id="two-iterators"),
])
def test_view_problems(view: dict[str, Any], expected: list[tuple[tuple[str | int, ...], str]]) -> None:
    problems = _problems(view)
    assert [where for where, _ in problems] == [where for where, _ in expected]
    for (_, message), (_, wanted) in zip(problems, expected):
        assert message.startswith(wanted), message


def test_view_error_message_names_every_place() -> None:
    with pytest.raises(ViewError) as caught:
        compile_view({"resource": "Patient", "select": [{"column": [{"name": "a", "path": "id.frist()"}]}]})
    assert str(caught.value) == ('select[0].column[0].path: unknown FHIRPath function "frist()" '
                                 '(did you mean "first()"?)')


@pytest.mark.parametrize(("reference", "of_type", "key"), [
    ({"reference": "Patient/123"}, None, "123"),
    ({"reference": "Patient/123"}, "Patient", "123"),
    ({"reference": "Patient/123"}, "Group", None),
    ({"reference": "http://ehr.example/fhir/Patient/p-9/_history/4"}, "Patient", "p-9"),
    ({"reference": "urn:uuid:0b1f"}, None, "0b1f"),
    ({"reference": "urn:uuid:0b1f", "type": "Patient"}, "Patient", "0b1f"),
    ({"reference": "urn:uuid:0b1f"}, "Patient", None),
    ({"reference": "#contained-1"}, None, None),
    ({"display": "no reference"}, None, None),
])
def test_reference_key(reference: dict[str, Any], of_type: str | None, key: str | None) -> None:
    assert reference_key(reference, of_type) == key


@pytest.mark.parametrize("fast", [True, False], ids=["compiled", "fhirpathpy"])
def test_resource_and_reference_keys_in_paths(fast: bool) -> None:
    view = compile_view(_view({"name": "key", "path": "getResourceKey()"},
                              {"name": "patient", "path": "subject.getReferenceKey(Patient)"},
                              {"name": "group", "path": "subject.getReferenceKey(Group)"},
                              {"name": "any", "path": "subject.getReferenceKey()"}), fast_paths=fast)
    resource = {"resourceType": "Observation", "id": "o1", "subject": {"reference": "Patient/p1"}}
    assert view.rows(resource) == [{"key": ["o1"], "patient": ["p1"], "group": [], "any": ["p1"]}]


def test_multi_valued_column_is_a_list_and_table_rejects_it_unless_collection() -> None:
    resource = {"resourceType": "Patient", "id": "p", "name": [{"given": ["Ann", "Bo"]}, {"given": ["Cy"]}]}
    plain = compile_view({"resource": "Patient", "select": [{"column": [{"name": "given", "path": "name.given"}]}]})
    assert plain.rows(resource) == [{"given": ["Ann", "Bo", "Cy"]}]
    with pytest.raises(ResourceError, match='Patient/p: column "given" gave 3 values and is not collection: true'):
        plain.table([resource])
    listed = compile_view({"resource": "Patient", "select": [{"column": [
        {"name": "given", "path": "name.given", "collection": True}]}]})
    assert listed.table([resource]) == [{"given": ["Ann", "Bo", "Cy"]}]


def test_choice_elements_and_dates_as_written() -> None:
    view = compile_view(_view({"name": "at", "path": "effective.ofType(dateTime)"},
                              {"name": "sbp", "path": "value.ofType(Quantity).value"},
                              {"name": "text", "path": "value.ofType(string)"}))
    resource = {"resourceType": "Observation", "effectiveDateTime": "2024-03-01T08:15:00+01:00",
                "valueQuantity": {"value": 132.5, "unit": "mm[Hg]"}}
    assert view.rows(resource) == [{"at": ["2024-03-01T08:15:00+01:00"], "sbp": [132.5], "text": []}]


def test_constants_from_yaml_values() -> None:
    view = compile_view(_view({"name": "after", "path": "effective.ofType(dateTime) > %start"},
                              constant=[{"name": "start", "valueDate": datetime.date(2024, 1, 1)}]))
    resource = {"resourceType": "Observation", "effectiveDateTime": "2024-02-01T10:00:00Z"}
    assert view.rows(resource) == [{"after": [True]}]


def test_where_giving_text_rejects_the_resource_not_the_view() -> None:
    view = compile_view({"resource": "Observation", "where": [{"path": "code.text.first()"}],
                         "select": [{"column": [{"name": "id", "path": "id"}]}]})
    assert view.matches({"resourceType": "Observation", "id": "o"}) is False
    assert view.matches({"resourceType": "Patient", "id": "p"}) is False
    with pytest.raises(ResourceError, match="where path \"code.text.first\\(\\)\" gave \\['BP'\\], not true or false"):
        view.matches({"resourceType": "Observation", "id": "o", "code": {"text": "BP"}})


# --- the compiled subset gives fhirpathpy's answers ---------------------------------------------------------------

PATHS = [
    "id", "status", "subject.reference", "effectiveDateTime", "valueQuantity.value", "valueQuantity.unit",
    "code.coding.code", "code.coding.system", "component.code.coding.code", "category.coding.display",
    "value.ofType(Quantity).value", "effective.ofType(dateTime)", "value.ofType(string)",
    "value.ofType(CodeableConcept).coding.code", "component.value.ofType(Quantity).value",
    "component.where(code.coding.code = '8480-6').value.ofType(Quantity).value",
    "code.coding.where(system = 'http://loinc.org' and code = '85354-9').exists()",
    "code.coding.where(system = 'http://loinc.org' or code = 'x').exists()",
    "code.coding.exists(code = '85354-9')", "component.exists()", "component.empty()", "note.empty()",
    "status = 'final'", "status != 'final'", "(status = 'final').not()", "valueQuantity.value = 120",
    "valueQuantity.value != 80.5", "subject.getReferenceKey(Patient)", "subject.getReferenceKey()",
    "performer.getReferenceKey(Practitioner)", "getResourceKey()", "code.coding.first().code",
    "component.code.coding.code.first()", "interpretation.coding.code", "valueBoolean",
    "value.ofType(boolean) = true",
    "code.coding.code.select(iif($this = '8480-6', 'sbp', iif($this = '8462-4', 'dbp', $this)))",
    "extension('http://x/e1').value", "extension('http://x/e2').value.ofType(Reference).identifier.value",
    "value.select(ofType(Quantity).value | ofType(string))", "component.value.select(ofType(Quantity).value)",
    "effective.ofType(dateTime) | extension('http://x/e1').value", "extension('http://x/e1').value.ofType(string)",
    "code.coding.where(code = 'x').exists() | status",
]


def _random_observation(rnd: random.Random, index: int) -> dict[str, Any]:
    def maybe(value: Any) -> Any:
        return value if rnd.random() < 0.7 else None

    def coding() -> dict[str, Any]:
        found = {"system": maybe(rnd.choice(["http://loinc.org", "http://snomed.info/sct"])),
                 "code": maybe(rnd.choice(["85354-9", "8480-6", "8462-4", "x"])), "display": maybe("BP")}
        return {k: v for k, v in found.items() if v is not None}

    value_kind = rnd.choice(["valueQuantity", "valueString", "valueCodeableConcept", "valueBoolean", None])
    value = {"valueQuantity": {"value": rnd.choice([120, 80.5, 132.25, 0]), "unit": "mm[Hg]"},
             "valueString": "high", "valueCodeableConcept": {"coding": [coding()]},
             "valueBoolean": rnd.random() < 0.5, None: None}[value_kind]
    resource: dict[str, Any] = {
        "resourceType": "Observation", "id": f"o{index}", "status": maybe(rnd.choice(["final", "amended"])),
        "code": {"coding": [coding() for _ in range(rnd.randint(0, 3))]},
        "subject": maybe({"reference": rnd.choice(["Patient/p1", "Group/g", "urn:uuid:42", "Patient/9/_history/2"])}),
        "performer": [{"reference": rnd.choice(["Practitioner/d1", "Organization/x"])}
                      for _ in range(rnd.randint(0, 2))],
        "effectiveDateTime": maybe(rnd.choice(["2024-01-02", "2024-01-02T10:00:00+01:00"])),
        "category": [{"coding": [coding()]}] if rnd.random() < 0.5 else None,
        "component": [{"code": {"coding": [coding()]}, "valueQuantity": {"value": rnd.choice([120, 80, 99.5])}}
                      for _ in range(rnd.randint(0, 3))],
    }
    if value_kind:
        resource[value_kind] = value
    extensions = [rnd.choice([{"url": "http://x/e1", "valueString": "2024-01-02"},
                              {"url": "http://x/e1", "valueDateTime": "2024-01-02T10:00:00Z"},
                              {"url": "http://x/e1", "valueInteger": 4},
                              {"url": "http://x/e2", "valueReference": {"identifier": {"value": "d9"}}},
                              {"url": "http://x/e2", "valueString": "d9"}]) for _ in range(rnd.randint(0, 3))]
    if extensions:
        resource["extension"] = extensions
    return {k: v for k, v in resource.items() if v is not None and v != []}


def test_compiled_subset_answers_as_fhirpathpy() -> None:
    columns = [{"name": f"c{i}", "path": path, "collection": True} for i, path in enumerate(PATHS)]
    compiled = compile_view(_view(*columns))
    reference = compile_view(_view(*columns), fast_paths=False)
    rnd = random.Random(20260512)
    compiled_columns = compiled._root.selects[0].columns
    direct = [p for p, c in zip(PATHS, compiled_columns) if c.path.direct("Observation") is not None]
    assert len(direct) >= len(PATHS) - 2, "paths left to fhirpathpy: " + str(set(PATHS) - set(direct))
    for index in range(300):
        resource = _random_observation(rnd, index)
        assert compiled.rows(resource) == reference.rows(resource), resource


def test_compiled_subset_in_for_each() -> None:
    select = [{"forEach": "component", "column": [
        {"name": "code", "path": "code.coding.code", "collection": True},
        {"name": "value", "path": "value.ofType(Quantity).value"}]}]
    compiled = compile_view({"resource": "Observation", "select": select})
    reference = compile_view({"resource": "Observation", "select": select}, fast_paths=False)
    rnd = random.Random(7)
    for index in range(100):
        resource = _random_observation(rnd, index)
        assert compiled.rows(resource) == reference.rows(resource)


# --- bounded behaviour ------------------------------------------------------------------------------------------

def test_huge_path_is_a_view_problem() -> None:
    problems = _problems(_view({"name": "a", "path": "(" * 3000 + "id" + ")" * 3000}))
    assert problems == [(("select", 0, "column", 0, "path"), "FHIRPath of 6002 characters is too long (at most 2000)")]


def test_catastrophic_regex_runs_in_linear_time() -> None:
    view = compile_view(_view({"name": "a", "path": "code.text.matches('(a+)+$')"}))
    start = time.perf_counter()
    assert view.rows({"resourceType": "Observation", "code": {"text": "a" * 100_000 + "!"}}) == [{"a": [False]}]
    assert time.perf_counter() - start < 1


def test_text_blow_up_is_refused() -> None:
    view = compile_view(_view({"name": "a", "path": "code.text.replace('', code.text).replace('', code.text)"}))
    with pytest.raises(ResourceError, match="more than 1000000 characters"):
        view.rows({"resourceType": "Observation", "id": "o", "code": {"text": "x" * 2000}})


def test_deeply_nested_resource_is_bounded() -> None:
    deep: dict[str, Any] = {"resourceType": "Observation", "id": "deep"}
    cursor = deep
    for _ in range(3000):
        cursor["contained"] = [{"resourceType": "Observation"}]
        cursor = cursor["contained"][0]
    assert compile_view(_view({"name": "id", "path": "id"})).rows(deep) == [{"id": ["deep"]}]
    with pytest.raises(ResourceError, match="Observation/deep: .*nested too deeply"):
        compile_view(_view({"name": "a", "path": "contained.contained.contained", "collection": True}),
                     fast_paths=False).rows(deep)
    repeat = compile_view({"resource": "Observation", "select": [{"repeat": ["contained"],
                                                                  "column": [{"name": "a", "path": "id"}]}]})
    assert len(repeat.rows(deep)) == 3000


@pytest.mark.parametrize("path, typo, hint", [
    ("valueQuantity.valu", "valu", "value"),
    ("componet.where(code.coding.code = '8480-6').valueQuantity.value", "componet", "component"),
    ("value.ofType(Quantiy).value", "Quantiy", "Quantity"),
])
def test_an_element_fhir_r4_does_not_have_is_a_view_problem(path: str, typo: str, hint: str) -> None:
    with pytest.raises(ViewError) as caught:
        compile_view(_view({"name": "a", "path": path}))
    assert str(caught.value).splitlines() == [f'select[0].column[0].path: "{typo}" is no element or type of FHIR R4: '
                                     f'a path through it would find nothing (did you mean "{hint}"?)']


def test_real_elements_types_and_primitive_extensions_are_accepted() -> None:
    for path in ("valueQuantity.value", "value.ofType(Quantity).unit", "_status.extension.url",
                 "subject.getReferenceKey(Patient)", "code.coding.where(system = %loinc).code"):
        compile_view(_view({"name": "a", "path": path}))


def test_a_view_of_thousands_of_columns_is_refused() -> None:
    columns = [{"name": f"c{n}", "path": "id"} for n in range(2001)]
    with pytest.raises(ViewError, match="the view has 2,001 columns; at most 2,000 are read"):
        compile_view({"resource": "Observation", "select": [{"column": columns}]})
