"""The canonical sample export written again in two real-world forms: a FHIR R4 bulk export
(``fhir/<ResourceType>.ndjson``) and a vendor-style EHR export (``vendor/``: cp1252, ``;``,
decimal comma, US datetimes, a long vitals flowsheet and one XLSX workbook).

Both are made from the canonical rows' text, cell by cell, so that auditing either form through
its source map (``maps/fhir-r4.yaml``, ``vendor/acme-ehr.map.yaml``) gives the canonical audit:
same keys, same values, and every planted bad row still bad. A value that does not convert in
the canonical export gets a representation of the form that does not convert either (``valid``
decides which values are bad; the FHIR writers keep a bad value as a ``valueString`` or a
``datetime-as-entered`` extension, the vendor files as typed; ``docs/fhir-map.md`` lists them)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import zipfile
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

Row = dict[str, Any]
Files = dict[str, tuple[dict[str, str], list[Row]]]
Broken = list[tuple[str, int, str]]          # (file name, line, what)

TZ = ZoneInfo("America/Los_Angeles")
BASE = "https://protocol-audit.example/fhir"
SD = f"{BASE}/StructureDefinition/"
CS = f"{BASE}/CodeSystem/"
STAFF = f"{BASE}/NamingSystem/staff-id"
CREDENTIAL = f"{BASE}/NamingSystem/credential-id"
PROFILE = f"{BASE}/NamingSystem/profile-id"
AE_REPORT = f"{BASE}/NamingSystem/ae-report-ref"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
DAR = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
ICD10CM = "http://hl7.org/fhir/sid/icd-10-cm"
THO = "http://terminology.hl7.org/CodeSystem/"

DRUGS = {"ketamine_racemic": ("6130", "ketamine"), "esketamine": ("2119365", "esketamine")}
ROUTES = {"IV": ("47625008", "Intravenous route"), "IN": ("46713006", "Nasal route"),
          "IM": ("78421000", "Intramuscular route"), "SC": ("34206005", "Subcutaneous route"),
          "PO": ("26643006", "Oral route"), "SL": ("37839007", "Sublingual route")}
# Instruments: LOINC where the instrument has a total-score code, always the local code too
INSTRUMENTS = {"PHQ9": ("44261-6", "PHQ-9 total score"), "CSSRS_SCREEN": ("93374-7", "C-SSRS risk level"),
               "DAST10": ("82667-7", "DAST-10 total score"), "AUDITC": ("75626-2", "AUDIT-C total score"),
               "MADRS": (None, "MADRS total score"), "QIDS_SR16": (None, "QIDS-SR16 total score"),
               "HAMD17": (None, "HAM-D17 total score"), "CAGEAID": (None, "CAGE-AID total score")}
VITAL_CODES = {"sbp_mmhg": ("8480-6", "Systolic blood pressure", "mm[Hg]"),
               "dbp_mmhg": ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
               "hr_bpm": ("8867-4", "Heart rate", "/min"),
               "spo2_pct": ("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry", "%")}
# the pack's enum values (rules/ketamine-iv.yaml): a value not among them is typed text, no coding
INTERVENTION_KINDS = ("repeat_bp", "physician_notified", "infusion_paused", "infusion_stopped", "medication",
                      "oxygen", "stimulation")
INTERVENTION_REASONS = ("hypertension", "hypoxia", "tachycardia", "sedation", "other")
PREGNANCY_TESTS = {"urine_hcg": ("2106-3", "Choriogonadotropin (pregnancy test) [Presence] in Urine"),
                   "serum_hcg": ("2118-8", "Choriogonadotropin (pregnancy test) [Presence] in Serum or Plasma")}
PREGNANCY_RESULTS = ("negative", "positive", "invalid")
GENDERS = {"F": "female", "M": "male", "X": "other", "U": "unknown"}
AE_TYPES = ("hypertension", "tachycardia", "desaturation", "resp_depression", "sedation_excess",
            "loss_of_consciousness", "emesis", "nausea", "dissociation_distress", "agitation", "other")
AE_SEVERITIES = ("mild", "moderate", "severe")
# R4 AdverseEvent.outcome has no code for a transfer to the ED: the event had not resolved when the
# patient left the clinic (ongoing); the local adverse-event-outcome code beside it keeps the value
AE_OUTCOMES = {"resolved": "resolved", "ongoing": "ongoing", "transferred": "ongoing"}
SERIOUSNESS = {"true": "serious", "false": "non-serious"}
DECISIONS = ("continue", "stop", "reinduce", "refer")
# each consent form is a Questionnaire, its versions sharing the form's canonical url (version apart)
CONSENT_FORMS = {"ketamine_iv": f"{BASE}/Questionnaire/consent-ketamine-iv",
                 "spravato": f"{BASE}/Questionnaire/consent-spravato"}
WITNESS = "http://hl7.org/fhir/StructureDefinition/consent-Witness"      # R4 core extension on Consent


# ----------------------------------------------------------------------------- values

def valid(kind: str, text: str) -> bool:
    """Whether canonical text converts to its declared kind (as the engine reads a CSV cell)."""
    try:
        if kind == "integer":
            return re.fullmatch(r"-?\d+", text) is not None
        if kind == "number":
            return re.fullmatch(r"-?\d+(\.\d+)?", text) is not None
        if kind == "boolean":
            return text in ("true", "false")
        if kind == "date":
            dt.date.fromisoformat(text)
            return re.fullmatch(r"\d{4}-\d\d-\d\d", text) is not None
        if kind == "datetime":
            return dt.datetime.fromisoformat(text).tzinfo is not None and "T" in text
    except ValueError:
        return False
    return True


def _number(text: str) -> int | float:
    return int(text) if re.fullmatch(r"-?\d+", text) else float(Decimal(text))


def _duplicate(row: Row) -> bool:
    return str(row.get("_bad", "")).startswith("duplicate")


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# ----------------------------------------------------------------------------- FHIR R4

def _ext(name: str, kind: str, text: str) -> list[dict[str, Any]]:
    """An extension ``SD + name`` holding the text typed as ``kind``; a value that does not convert
    is kept as valueString (still not a value of the field's type); missing is no extension."""
    if text == "":
        return []
    url = SD + name
    if not valid(kind, text):
        return [{"url": url, "valueString": text}]
    if kind == "boolean":
        return [{"url": url, "valueBoolean": text == "true"}]
    if kind == "integer":
        return [{"url": url, "valueInteger": int(text)}]
    if kind == "date":
        return [{"url": url, "valueDate": text}]
    if kind == "datetime":
        return [{"url": url, "valueDateTime": text}]
    if kind == "code":
        return [{"url": url, "valueCode": text}]
    return [{"url": url, "valueString": text}]


def _quantity_ext(name: str, text: str, unit: str) -> list[dict[str, Any]]:
    if text == "":
        return []
    if not valid("number", text):
        return [{"url": SD + name, "valueString": text}]
    return [{"url": SD + name, "valueQuantity": {"value": _number(text), "unit": unit, "system": UCUM,
                                                 "code": unit}}]


def _staff(ident: str) -> dict[str, Any]:
    # staff ids are identifiers, not resource ids: the export has ids such as "Dr. Okafor"
    return {"identifier": {"system": STAFF, "value": ident}}


def _subject(row: Row) -> dict[str, str]:
    return {"reference": f"Patient/{row['patient_id']}"}


def _moment(resource: dict[str, Any], element: str, text: str) -> None:
    """The resource's main date/time; text that is no valid FHIR dateTime goes to the
    datetime-as-entered extension instead."""
    if text == "":
        return
    if valid("datetime", text) or valid("date", text):
        resource[element] = text
    else:
        resource.setdefault("extension", []).append({"url": SD + "datetime-as-entered", "valueString": text})


def _meta(row: Row) -> dict[str, Any]:
    # a record exported twice: the same resource id, a second version
    return {"meta": {"versionId": "2"}} if _duplicate(row) else {}


def medication_administration(row: Row) -> dict[str, Any]:
    """One session as a MedicationAdministration."""
    cancelled = row["cancelled"]
    status = {"true": "not-done", "false": "completed"}.get(cancelled, "unknown")
    res: dict[str, Any] = {"resourceType": "MedicationAdministration", "id": row["session_id"], **_meta(row),
                           "status": status}
    ext: list[dict[str, Any]] = []
    for name, column, kind in (("arrival-time", "session_start", "datetime"), ("session-date", "session_date", "date"),
                               ("course-id", "course_id", "string"), ("site-id", "site_id", "string"),
                               ("course-phase", "phase", "code"),
                               ("session-number-in-course", "session_number_in_course", "integer"),
                               ("setting-type", "setting_type", "code"), ("cancelled", "cancelled", "boolean"),
                               ("prescriber-onsite", "prescriber_onsite", "boolean"),
                               ("consent-signed-date", "consent_signed_date", "date")):
        ext += _ext(name, kind, row[column])
    ext += _quantity_ext("dosing-weight", row["dosing_weight_kg"], "kg")
    ext += _ext("devices-count", "integer", row["devices_count"])
    ext += _ext("predose-bp-time", "datetime", row["predose_bp_time"])
    ext += _quantity_ext("predose-systolic", row["predose_sbp"], "mm[Hg]")
    ext += _quantity_ext("predose-diastolic", row["predose_dbp"], "mm[Hg]")
    for name, column, kind in (("predose-bp-override", "predose_bp_override", "boolean"),
                               ("spo2-monitored", "spo2_monitored", "boolean"),
                               ("monitoring-end-time", "monitoring_end_time", "datetime"),
                               ("discharge-time", "discharge_time", "datetime"),
                               ("escort-present", "escort_present", "boolean"),
                               ("no-drive-instruction-given", "no_drive_instruction_given", "boolean"),
                               ("pmf-submitted-date", "pmf_submitted_date", "date")):
        ext += _ext(name, kind, row[column])
    res["extension"] = ext
    drug = row["drug"]
    if drug in DRUGS:
        code, display = DRUGS[drug]
        res["medicationCodeableConcept"] = {"coding": [{"system": RXNORM, "code": code, "display": display}]}
    else:                                    # not recorded
        res["medicationCodeableConcept"] = {"extension": [{"url": DAR, "valueCode": "unknown"}]}
    res["subject"] = _subject(row)
    res["context"] = {"reference": f"Encounter/{row['session_id']}"}
    period = {k: row[c] for k, c in (("start", "dose_start_time"), ("end", "dose_end_time")) if row[c]}
    res["effectivePeriod"] = period or {"extension": [{"url": DAR, "valueCode": "unknown"}]}
    performers = []
    if row["supervising_clinician_id"]:
        sup: dict[str, Any] = {}
        sup_ext = _ext("supervisor-credential", "code", row["supervising_role"]) + _ext(
            "acls-expiry", "date", row["acls_expiry"])
        if sup_ext:
            sup["extension"] = sup_ext
        sup["function"] = {"coding": [{"system": CS + "performer-function", "code": "supervisor"}]}
        sup["actor"] = _staff(row["supervising_clinician_id"])
        performers.append(sup)
    if row["second_bls_staff_id"]:
        performers.append({"function": {"coding": [{"system": CS + "performer-function", "code": "second-bls"}]},
                           "actor": _staff(row["second_bls_staff_id"])})
    if performers:
        res["performer"] = performers
    if row.get("notes"):
        res["note"] = [{"text": row["notes"]}]
    dosage: dict[str, Any] = {}
    dose = row["dose_mg"]
    if dose and not valid("number", dose):
        dosage["text"] = dose                # a dose that is not a number stays free text
    if row["route"]:
        sct = ROUTES.get(row["route"])
        coding = [{"system": SNOMED, "code": sct[0], "display": sct[1]}] if sct else []
        dosage["route"] = {"coding": coding + [{"system": CS + "route", "code": row["route"]}]}
    if dose and valid("number", dose):
        dosage["dose"] = {"value": _number(dose), "unit": "mg", "system": UCUM, "code": "mg"}
    if dosage:
        res["dosage"] = dosage
    return res


def _code(instrument_or_loinc: tuple[str | None, str], local: str | None) -> dict[str, Any]:
    loinc, display = instrument_or_loinc
    coding = [{"system": LOINC, "code": loinc, "display": display}] if loinc else []
    if local:
        coding.append({"system": CS + "instrument", "code": local})
    return {"coding": coding, "text": display}


def _value(target: dict[str, Any], text: str, unit: str | None) -> None:
    """An Observation or component value: a Quantity (vitals), an integer (scores), or the text
    as valueString when it is not a number."""
    if text == "":
        return
    if not valid("integer", text):
        target["valueString"] = text
    elif unit is None:
        target["valueInteger"] = int(text)
    else:
        target["valueQuantity"] = {"value": int(text), "unit": unit, "system": UCUM, "code": unit}


def _category(code: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": code}]}]


def vital_observation(row: Row) -> dict[str, Any]:
    """One reading: a blood-pressure panel (85354-9, all children optional) carrying the reading's
    heart rate and SpO2 as components too, so that one reading stays one record."""
    res: dict[str, Any] = {"resourceType": "Observation", "id": row["vital_id"], **_meta(row), "status": "final"}
    ext = _ext("dose-start-time", "datetime", row["dose_start_time"]) + _ext("reading-phase", "code", row["phase"])
    if ext:
        res["extension"] = ext
    res["category"] = _category("vital-signs")
    res["code"] = {"coding": [{"system": LOINC, "code": "85354-9",
                               "display": "Blood pressure panel with all children optional"}]}
    res["subject"] = _subject(row)
    if row["session_id"]:
        res["encounter"] = {"reference": f"Encounter/{row['session_id']}"}
    _moment(res, "effectiveDateTime", row["measured_at"])
    components = []
    for column, (code, display, unit) in VITAL_CODES.items():
        comp: dict[str, Any] = {"code": {"coding": [{"system": LOINC, "code": code, "display": display}]}}
        if row[column]:
            _value(comp, row[column], unit)
        elif column in ("sbp_mmhg", "dbp_mmhg"):
            comp["dataAbsentReason"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                    "data-absent-reason", "code": "error"}]}
        else:
            continue
        components.append(comp)
    res["component"] = components
    return res


def scale_observation(row: Row, key: str, at: str) -> dict[str, Any]:
    """A screening (DAST-10, AUDIT-C, CAGE-AID) or assessment (PHQ-9, MADRS, QIDS-SR16, C-SSRS)."""
    instrument = row["instrument"]
    res: dict[str, Any] = {"resourceType": "Observation", "id": row[key], **_meta(row), "status": "final"}
    ext: list[dict[str, Any]] = []
    if "sex" in row:
        ext += _ext("patient-sex", "code", row["sex"])
    if "reviewed_by" in row and row["reviewed_by"]:
        ext.append({"url": SD + "reviewed-by", "valueReference": _staff(row["reviewed_by"])})
    if "reviewed_at" in row:
        ext += _ext("reviewed-at", "datetime", row["reviewed_at"])
    if ext:
        res["extension"] = ext
    res["category"] = _category("survey")
    res["code"] = _code(INSTRUMENTS.get(instrument, (None, instrument)), instrument or None)
    res["subject"] = _subject(row)
    if row.get("session_id"):
        res["encounter"] = {"reference": f"Encounter/{row['session_id']}"}
    _moment(res, "effectiveDateTime", row[at])
    if row.get("administered_by"):
        res["performer"] = [_staff(row["administered_by"])]
    _value(res, row["total_score"], None)
    if row.get("risk_level"):
        res["valueCodeableConcept"] = {"coding": [{"system": CS + "cssrs-risk", "code": row["risk_level"]}]}
    if row.get("item9_score"):
        comp = {"code": {"coding": [{"system": LOINC, "code": "44260-8", "display": "PHQ-9 item 9"}]}}
        _value(comp, row["item9_score"], None)
        res["component"] = [comp]
    return res


def enrollment_consent(row: Row) -> dict[str, Any]:
    """A SPRAVATO REMS patient enrollment as a Consent to the REMS (the enrolling prescriber as
    performer: the form is signed by both)."""
    res: dict[str, Any] = {"resourceType": "Consent", "id": row["enrollment_id"], **_meta(row),
                           "status": "active",
                           "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                                 "code": "treatment"}]},
                           "category": [{"coding": [{"system": CS + "consent-category",
                                                     "code": "rems-patient-enrollment"}]}],
                           "patient": _subject(row)}
    _moment(res, "dateTime", row["enrolled_date"])
    res["performer"] = [_staff(row["enrolled_by"])] if row["enrolled_by"] else []
    if row.get("site_id"):
        res["organization"] = [{"identifier": {"system": f"{BASE}/NamingSystem/site-id", "value": row["site_id"]}}]
    res["policy"] = [{"uri": "https://www.spravatorems.com"}]
    if not res["performer"]:
        del res["performer"]
    return res


def consent_form_questionnaire(row: Row) -> dict[str, Any]:
    """One version of a consent form (a row of the consent_form reference table, no patient) as a
    Questionnaire: id and version the form version, url the form's canonical (the same for each
    version of a form), the form in the local consent-form code system (``code``), status active
    while in use and retired once it has a retirement date, effectivePeriod from when it took
    effect to its retirement, the title, and whether it requires re-consent as the
    reconsent-required extension. An effective_on that is no valid FHIR date is no
    effectivePeriod.start: the datetime-as-entered extension holds the text."""
    form, version = row["form"], row["form_version"]
    if form not in CONSENT_FORMS or not re.fullmatch(r"[A-Za-z0-9.-]{1,64}", version):
        raise ValueError(f"{version}: form {form!r} or form version {version!r} has no FHIR form here")
    res: dict[str, Any] = {"resourceType": "Questionnaire", "id": version, **_meta(row)}
    ext = _ext("reconsent-required", "boolean", row["reconsent_required"])
    end = row["retired_on"]
    period = _period(version, ("effective_on", row["effective_on"]), ("retired_on", end), ext)
    if ext:
        res["extension"] = ext
    res["url"] = CONSENT_FORMS[form]
    res["version"] = version
    if row.get("title"):
        res["title"] = row["title"]
    res["status"] = "retired" if end else "active"
    res["subjectType"] = ["Patient"]
    if period:
        res["effectivePeriod"] = period
    res["code"] = [{"system": CS + "consent-form", "code": form}]
    return res


def treatment_consent(row: Row, form_of: dict[str, str]) -> dict[str, Any]:
    """A signed consent document as a Consent (status active, scope treatment): category LOINC
    59284-0 with the local consent-category code treatment-consent (the REMS enrollments are
    rems-patient-enrollment) and the form the patient signed in the local consent-form system; the
    patient as patient and performer (who signs), dateTime the signing date, the witness (a staff
    identifier) in R4's consent-Witness extension; the form version signed as policy.uri, the
    canonical of the version's Questionnaire, ``url|version`` (``form_of``: each version's form,
    from the consent_form table; a version not in it takes the consent's own form's url)."""
    form, version = row["form"], row["form_version"]
    if form not in CONSENT_FORMS or "|" in version:
        raise ValueError(f"{row['consent_id']}: form {form!r} or form version {version!r} has no FHIR form here")
    res: dict[str, Any] = {"resourceType": "Consent", "id": row["consent_id"], **_meta(row)}
    if row["witness_id"]:
        res["extension"] = [{"url": WITNESS, "valueReference": _staff(row["witness_id"])}]
    res["status"] = "active"
    res["scope"] = {"coding": [{"system": THO + "consentscope", "code": "treatment"}]}
    res["category"] = [{"coding": [{"system": LOINC, "code": "59284-0", "display": "Patient Consent"},
                                   {"system": CS + "consent-category", "code": "treatment-consent"}]},
                       {"coding": [{"system": CS + "consent-form", "code": form}]}]
    res["patient"] = _subject(row)
    _moment(res, "dateTime", row["signed_on"])
    res["performer"] = [_subject(row)]
    url = CONSENT_FORMS[form_of.get(version, form)]
    res["policy"] = [{"uri": f"{url}|{version}" if version else url}]
    return res


def _period(ident: str, start: tuple[str, str], end: tuple[str, str], ext: list[dict[str, Any]]) -> dict[str, str]:
    """A Period from two date cells, each (column, text): a start that is no valid FHIR date is no
    period.start, its text kept in a datetime-as-entered extension appended to ``ext``; an end must
    be a valid date (no sample plants a bad one)."""
    period: dict[str, str] = {}
    if start[1] and valid("date", start[1]):
        period["start"] = start[1]
    elif start[1]:
        ext.append({"url": SD + "datetime-as-entered", "valueString": start[1]})
    if end[1] and not valid("date", end[1]):
        raise ValueError(f"{ident}: {end[0]} {end[1]!r} has no FHIR form here (only {start[0]} has an "
                         "as-entered extension)")
    if end[1]:
        period["end"] = end[1]
    return period


def _qualification(row: Row) -> dict[str, Any]:
    """One roster credential as a Practitioner.qualification: its id, kind (local code), validity
    period and verification date. An issued_on that is no valid FHIR date is no period.start: the
    qualification's datetime-as-entered extension holds the text (as a resource's moment does)."""
    qual: dict[str, Any] = {}
    ext = _ext("verified-on", "date", row["verified_on"])
    period = _period(row["credential_id"], ("issued_on", row["issued_on"]), ("expires_on", row["expires_on"]), ext)
    if ext:
        qual["extension"] = ext
    if row["credential_id"]:
        qual["identifier"] = [{"system": CREDENTIAL, "value": row["credential_id"]}]
    qual["code"] = {"coding": [{"system": CS + "credential-kind", "code": row["kind"]}]} if row["kind"] else \
        {"extension": [{"url": DAR, "valueCode": "unknown"}]}
    if period:
        qual["period"] = period
    return qual


def practitioners(rows: list[Row]) -> list[tuple[Row, dict[str, Any]]]:
    """The staff roster as one Practitioner per staff member (id from the staff id, the staff id as
    identifier), each credential of the roster a ``qualification`` in roster order. The row given
    with each resource carries ``_bad`` when one of its credentials is a planted bad row."""
    by_staff: dict[str, list[Row]] = {}
    for row in rows:
        by_staff.setdefault(row["staff_id"], []).append(row)
    out = []
    for staff in sorted(by_staff):
        res: dict[str, Any] = {"resourceType": "Practitioner", "id": _resource_id(staff),
                               "identifier": [{"system": STAFF, "value": staff}],
                               "qualification": [_qualification(r) for r in by_staff[staff]]}
        bad = [str(r["_bad"]) for r in by_staff[staff] if "_bad" in r]
        out.append(({"_bad": "; ".join(bad)} if bad else {}, res))
    return out


def _resource_id(ident: str) -> str:
    """A valid FHIR resource id from a staff id (CL-004 is one; "Dr. Okafor" becomes Dr.-Okafor)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "-", ident)[:64] or "unknown"


def _coded(system: str, codes: tuple[str, ...], text: str) -> dict[str, Any]:
    """A CodeableConcept of a local code system; a value that is none of its codes (keyed as free
    text) is the concept's ``text`` with no coding, which the map reads as typed."""
    return {"coding": [{"system": CS + system, "code": text}]} if text in codes else {"text": text}


def intervention_procedure(row: Row) -> dict[str, Any]:
    """What the nurse did about a reading as a Procedure: the kind in the local intervention-kind
    code system, the reason in intervention-reason, in the session's Encounter (as the vitals are),
    by a staff member (identifier)."""
    res: dict[str, Any] = {"resourceType": "Procedure", "id": row["intervention_id"], **_meta(row),
                           "status": "completed"}
    if row["kind"]:
        res["code"] = _coded("intervention-kind", INTERVENTION_KINDS, row["kind"])
    res["subject"] = _subject(row)
    if row["session_id"]:
        res["encounter"] = {"reference": f"Encounter/{row['session_id']}"}
    _moment(res, "performedDateTime", row["performed_at"])
    if row["performed_by"]:
        res["performer"] = [{"actor": _staff(row["performed_by"])}]
    if row["reason"]:
        res["reasonCode"] = [_coded("intervention-reason", INTERVENTION_REASONS, row["reason"])]
    return res


def _date_or_string(resource: dict[str, Any], element: str, text: str) -> None:
    """A choice element with a string type (Condition.onset[x], .abatement[x]): a valid date is
    ``<element>DateTime``, text that is no date ``<element>String`` as typed."""
    if text:
        resource[element + ("DateTime" if valid("date", text) else "String")] = text


def problem_condition(row: Row) -> dict[str, Any]:
    """A problem-list entry as a Condition: ICD-10-CM code, onset and resolution dates (the
    clinical status resolved when there is a resolution date, active when not), recorded date and
    recorder (staff identifier)."""
    res: dict[str, Any] = {"resourceType": "Condition", "id": row["problem_id"], **_meta(row),
                           "clinicalStatus": {"coding": [{"system": THO + "condition-clinical",
                                                          "code": "resolved" if row["resolved_on"] else "active"}]},
                           "verificationStatus": {"coding": [{"system": THO + "condition-ver-status",
                                                              "code": "confirmed"}]},
                           "category": [{"coding": [{"system": THO + "condition-category",
                                                     "code": "problem-list-item"}]}]}
    if row["code"]:
        coding = {"system": ICD10CM, "code": row["code"]}
        if row.get("display"):
            coding["display"] = row["display"]
        res["code"] = {"coding": [coding]}
    res["subject"] = _subject(row)
    _date_or_string(res, "onset", row["onset_on"])
    _date_or_string(res, "abatement", row["resolved_on"])
    _moment(res, "recordedDate", row["recorded_at"])
    if row["recorded_by"]:
        res["recorder"] = _staff(row["recorded_by"])
    return res


def pregnancy_observation(row: Row) -> dict[str, Any]:
    """A pregnancy test as a laboratory Observation: LOINC 2106-3 (urine hCG) or 2118-8 (serum
    hCG), the result a code of the local pregnancy-test-result system; a result keyed as free
    text is ``valueString``."""
    method = row["method"]
    if method not in PREGNANCY_TESTS:
        raise ValueError(f"{row['test_id']}: method {method!r} has no LOINC code here")
    code, display = PREGNANCY_TESTS[method]
    res: dict[str, Any] = {"resourceType": "Observation", "id": row["test_id"], **_meta(row), "status": "final",
                           "category": _category("laboratory"),
                           "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
                           "subject": _subject(row)}
    _moment(res, "effectiveDateTime", row["collected_at"])
    result = row["result"]
    if result in PREGNANCY_RESULTS:
        res["valueCodeableConcept"] = {"coding": [{"system": CS + "pregnancy-test-result", "code": result}]}
    elif result:
        res["valueString"] = result
    return res


def adverse_event(row: Row) -> dict[str, Any]:
    """An adverse event as an AdverseEvent (actuality actual): the event in the local
    adverse-event-type code system, in the session's Encounter (as the vitals are), its date the
    onset, the session's MedicationAdministration as the suspect (the drug's RxNorm code beside it,
    extension suspect-medication), seriousness, severity and outcome in HL7's code systems (the
    outcome also as a local adverse-event-outcome code, which keeps a transfer to the ED), the
    recorder a staff member (identifier); the action taken, where it was reported and when are
    extensions, the report's reference the identifier. A value that is none of a code system's codes
    is the concept's text, as typed; an onset that is no valid dateTime the datetime-as-entered
    extension."""
    if not row["session_id"]:
        raise ValueError(f"{row['ae_id']}: no session, so no MedicationAdministration to name as the suspect")
    res: dict[str, Any] = {"resourceType": "AdverseEvent", "id": row["ae_id"], **_meta(row)}
    ext = _ext("action-taken", "code", row["action"]) + _ext("reported-to", "code", row["reported_to"]) + _ext(
        "reported-at", "datetime", row["reported_at"])
    if ext:
        res["extension"] = ext
    if row["report_ref"]:
        res["identifier"] = {"system": AE_REPORT, "value": row["report_ref"]}   # R4: one identifier
    res["actuality"] = "actual"
    if row["ae_type"]:
        res["event"] = _coded("adverse-event-type", AE_TYPES, row["ae_type"])
    res["subject"] = _subject(row)
    res["encounter"] = {"reference": f"Encounter/{row['session_id']}"}
    _moment(res, "date", row["onset_at"])
    if row["recorded_by"]:
        res["recorder"] = _staff(row["recorded_by"])
    serious, severity, outcome = row["serious"], row["severity"], row["outcome"]
    if serious:
        res["seriousness"] = {"coding": [{"system": THO + "adverse-event-seriousness", "code": SERIOUSNESS[serious]}]} \
            if serious in SERIOUSNESS else {"text": serious}
    if severity:
        res["severity"] = {"coding": [{"system": THO + "adverse-event-severity", "code": severity}]} \
            if severity in AE_SEVERITIES else {"text": severity}
    if outcome:
        res["outcome"] = {"coding": [{"system": THO + "adverse-event-outcome", "code": AE_OUTCOMES[outcome]},
                                     {"system": CS + "adverse-event-outcome", "code": outcome}]} \
            if outcome in AE_OUTCOMES else {"text": outcome}
    suspect: dict[str, Any] = {}
    drug = row["drug"]
    if drug:
        code, display = DRUGS.get(drug, (None, drug))
        suspect["extension"] = [{"url": SD + "suspect-medication", "valueCodeableConcept":
                                 {"coding": [{"system": RXNORM, "code": code, "display": display}]} if code
                                 else {"text": drug}}]
    suspect["instance"] = {"reference": f"MedicationAdministration/{row['session_id']}"}
    res["suspectEntity"] = [suspect]
    return res


def treatment_review(row: Row) -> dict[str, Any]:
    """The prescriber's end-of-induction review as a ClinicalImpression (status completed): the
    decision in the local treatment-decision code system (extension treatment-decision; a decision
    keyed as free text is the concept's text), the course as the course-id extension (as on the
    sessions), the date the review's time, the assessor a staff member (identifier), the reason
    the summary."""
    res: dict[str, Any] = {"resourceType": "ClinicalImpression", "id": row["review_id"], **_meta(row)}
    ext = _ext("course-id", "string", row["course_id"])
    if row["decision"]:
        ext.append({"url": SD + "treatment-decision",
                    "valueCodeableConcept": _coded("treatment-decision", DECISIONS, row["decision"])})
    if ext:
        res["extension"] = ext
    res["status"] = "completed"
    res["subject"] = _subject(row)
    _moment(res, "date", row["reviewed_at"])
    if row["reviewed_by"]:
        res["assessor"] = _staff(row["reviewed_by"])
    if row["reason"]:
        res["summary"] = row["reason"]
    return res


def _registration(patient: dict[str, Any], row: Row) -> None:
    """A registration (profile) on its Patient: profile id as identifier, sex as gender, the birth
    year as a year-only birthDate, registered_at and childbearing potential as extensions."""
    ext = _ext("registered-at", "datetime", row["registered_at"]) + _ext(
        "childbearing-potential", "boolean", row["childbearing_potential"])
    if ext:
        patient["extension"] = ext
    if row["profile_id"]:
        patient["identifier"] = [{"system": PROFILE, "value": row["profile_id"]}]
    sex, year = row["sex"], row["birth_year"]
    if (sex and sex not in GENDERS) or (year and not re.fullmatch(r"\d{4}", year)):
        raise ValueError(f"{row['profile_id']}: sex {sex!r} or birth_year {year!r} has no FHIR form here")
    if sex:
        patient["gender"] = GENDERS[sex]
    if year:
        patient["birthDate"] = year


def patients(files: Files) -> list[tuple[Row | None, dict[str, Any]]]:
    """A Patient per patient id of the export. A patient with a registration (profiles) carries it
    (:func:`_registration`); a registration exported twice is the Patient twice, the second as
    version 2. A patient without one has the gender of the screenings' sex where recorded."""
    sex: dict[str, str] = {}
    ids: set[str] = set()
    for _columns, rows in files.values():
        for row in rows:
            if row.get("patient_id"):
                ids.add(row["patient_id"])
    for row in files["screenings"][1]:
        if row.get("sex"):
            sex.setdefault(row["patient_id"], row["sex"])
    registrations: dict[str, list[Row]] = {}
    for row in files["profiles"][1]:
        registrations.setdefault(row["patient_id"], []).append(row)
    out: list[tuple[Row | None, dict[str, Any]]] = []
    for pid in sorted(ids):
        profiles = registrations.get(pid, [])
        if any(not _duplicate(r) for r in profiles[1:]):
            raise ValueError(f"{pid}: two registrations, one Patient")
        for row in profiles:
            res: dict[str, Any] = {"resourceType": "Patient", "id": pid, **_meta(row)}
            _registration(res, row)
            out.append((row, res))
        if not profiles:
            out.append((None, {"resourceType": "Patient", "id": pid,
                               "gender": GENDERS.get(sex.get(pid, ""), "unknown")}))
    return out


def _write_ndjson(path: Path, resources: Iterable[tuple[Row | None, dict[str, Any]]]) -> Broken:
    broken: Broken = []
    with open(path, "w", newline="\n", encoding="utf-8") as fh:
        for line, (row, res) in enumerate(resources, start=1):
            text = _dump(res)
            defect = row.get("_defect") if row else None
            if defect == "short_row":
                text = text[: len(text) // 2]                    # truncated: does not parse
            elif defect == "extra_cell":
                text = _dump(list(res.values()))                 # an array, not a resource
            if row and "_bad" in row:
                broken.append((path.name, line, str(row["_bad"])))
            fh.write(text + "\n")
    return broken


def write_fhir(files: Files, out: Path) -> Broken:
    """The export as FHIR R4 bulk-export NDJSON files in ``out``. Returns the planted bad rows."""
    out.mkdir(parents=True, exist_ok=True)
    broken = _write_ndjson(out / "Patient.ndjson", patients(files))
    broken += _write_ndjson(out / "MedicationAdministration.ndjson",
                            ((r, medication_administration(r)) for r in files["sessions"][1]))
    observations = [(r, vital_observation(r)) for r in files["vitals"][1]]
    observations += [(r, scale_observation(r, "screening_id", "screened_at")) for r in files["screenings"][1]]
    observations += [(r, scale_observation(r, "assessment_id", "administered_at")) for r in files["assessments"][1]]
    observations += [(r, pregnancy_observation(r)) for r in files["pregnancy_tests"][1]]
    broken += _write_ndjson(out / "Observation.ndjson", observations)
    form_of = {r["form_version"]: r["form"] for r in files["consent_forms"][1] if r["form"] in CONSENT_FORMS}
    broken += _write_ndjson(out / "Consent.ndjson", [(r, enrollment_consent(r)) for r in files["enrollments"][1]]
                            + [(r, treatment_consent(r, form_of)) for r in files["consents"][1]])
    broken += _write_ndjson(out / "Practitioner.ndjson", practitioners(files["credentials"][1]))
    broken += _write_ndjson(out / "Procedure.ndjson",
                            ((r, intervention_procedure(r)) for r in files["interventions"][1]))
    broken += _write_ndjson(out / "Condition.ndjson", ((r, problem_condition(r)) for r in files["problems"][1]))
    broken += _write_ndjson(out / "AdverseEvent.ndjson", ((r, adverse_event(r)) for r in files["adverse_events"][1]))
    broken += _write_ndjson(out / "ClinicalImpression.ndjson",
                            ((r, treatment_review(r)) for r in files["treatment_reviews"][1]))
    broken += _write_ndjson(out / "Questionnaire.ndjson",
                            ((r, consent_form_questionnaire(r)) for r in files["consent_forms"][1]))
    return broken


# ----------------------------------------------------------------------------- vendor (Acme EHR)

US_DATETIME = "%m/%d/%Y %I:%M %p"
US_DATE = "%m/%d/%Y"
YES_NO = {"true": "Y", "false": "N"}


def us_datetime(text: str) -> str:
    """Canonical ISO text as the vendor's local US datetime; a canonical value that is no valid
    datetime gets a US-looking text that is no valid datetime either."""
    if valid("datetime", text):
        return dt.datetime.fromisoformat(text).astimezone(TZ).strftime(US_DATETIME)
    iso = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d).*", text)
    if iso:                                  # 2026-02-30T12:12 -> 02/30/2026 12:12 PM (no such day)
        y, m, d, hh, mm = (int(g) for g in iso.groups())
        return f"{m:02d}/{d:02d}/{y} {(hh - 1) % 12 + 1:02d}:{mm:02d} {'AM' if hh < 12 else 'PM'}"
    us = re.fullmatch(r"(\d\d)/(\d\d)/(\d{4}) (\d\d):(\d\d)", text)
    if us:                                   # 24-hour US time -> day first (month 25: no such month)
        m, d, y, hh, mm = us.groups()
        return f"{d}/{m}/{y} {(int(hh) - 1) % 12 + 1:02d}:{mm} {'AM' if int(hh) < 12 else 'PM'}"
    return text


def us_date(text: str) -> str:
    if valid("date", text):
        return dt.date.fromisoformat(text).strftime(US_DATE)
    iso = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)", text)
    return f"{iso.group(2)}/{iso.group(3)}/{iso.group(1)}" if iso else text   # 13/01/2026: no month 13


def comma_number(text: str, unit: str) -> str:
    """A number with a decimal comma and its unit ("38,5 mg"). A canonical value that is no
    number gets a cell that is no number under decimal comma either: "40,2" would be valid, so it
    is charted as a volume ("40,2 ml"), and "84 mg" as devices ("3 x 28 mg")."""
    if valid("number", text):
        return f"{text.replace('.', ',')} {unit}"
    if re.fullmatch(r"-?\d+,\d+", text):
        return f"{text} ml"
    whole = re.fullmatch(r"(\d+) mg", text)
    if whole and int(whole.group(1)) % 28 == 0:
        return f"{int(whole.group(1)) // 28} x 28 mg"
    return text


def blood_pressure(sbp: str, dbp: str) -> str:
    """Systolic and diastolic in one cell ("134/83"). A systolic that already holds both
    ("134/83" in the canonical systolic column) is charted with a dash, which no part reads."""
    if sbp == "" and dbp == "":
        return ""
    if not valid("integer", sbp) and "/" in sbp:
        return sbp.replace("/", "-")
    return f"{sbp}/{dbp}"


SESSION_LABELS = {
    "drug": {"ketamine_racemic": "Ketamine HCl", "esketamine": "Spravato (esketamine)"},
    "route": {"IV": "Intravenous", "IN": "Intranasal"},
    "setting_type": {"outpatient": "Outpatient", "inpatient": "Inpatient"},
    "phase": {"induction": "Induction", "maintenance": "Maintenance", "reinduction": "Re-induction"},
}
INSTRUMENT_LABELS = {"DAST10": "DAST-10", "AUDITC": "AUDIT-C", "CAGEAID": "CAGE-AID", "PHQ9": "PHQ-9",
                     "MADRS": "MADRS", "QIDS_SR16": "QIDS-SR16", "HAMD17": "HAM-D 17",
                     "CSSRS_SCREEN": "C-SSRS Screener"}
SEX_LABELS = {"F": "Female", "M": "Male", "X": "Nonbinary", "U": "Unknown"}
RISK_LABELS = {"none": "None", "low": "Low", "moderate": "Moderate", "high": "High"}


def _label(labels: dict[str, str], text: str) -> str:
    return labels.get(text, text)             # a value not listed ("iv") passes through


def _flag(text: str) -> str:
    return YES_NO.get(text, text)


def infusion_row(row: Row) -> list[str]:
    """A session as the vendor's infusion row (the comments column last, as in the canonical file)."""
    cells = [
        row["session_id"], row["site_id"], row["patient_id"], row["course_id"], row["session_number_in_course"],
        _label(SESSION_LABELS["phase"], row["phase"]), us_datetime(row["session_start"]) if row["session_start"]
        else "", us_date(row["session_date"]) if row["session_date"] else "",
        _label(SESSION_LABELS["drug"], row["drug"]), _label(SESSION_LABELS["route"], row["route"]),
        _label(SESSION_LABELS["setting_type"], row["setting_type"]), _flag(row["cancelled"]),
        row["supervising_clinician_id"], row["supervising_role"],
        us_date(row["acls_expiry"]) if row["acls_expiry"] else "", row["second_bls_staff_id"],
        _flag(row["prescriber_onsite"]), us_date(row["consent_signed_date"]) if row["consent_signed_date"] else "",
        comma_number(row["dosing_weight_kg"], "kg") if row["dosing_weight_kg"] else "",
        comma_number(row["dose_mg"], "mg") if row["dose_mg"] else "", row["devices_count"],
        us_datetime(row["predose_bp_time"]) if row["predose_bp_time"] else "",
        blood_pressure(row["predose_sbp"], row["predose_dbp"]), _flag(row["predose_bp_override"]),
        *(us_datetime(row[c]) if row[c] else "" for c in ("dose_start_time", "dose_end_time")),
        _flag(row["spo2_monitored"]), us_datetime(row["monitoring_end_time"]) if row["monitoring_end_time"] else "",
        us_datetime(row["discharge_time"]) if row["discharge_time"] else "", _flag(row["escort_present"]),
        _flag(row["no_drive_instruction_given"]),
        us_date(row["pmf_submitted_date"]) if row["pmf_submitted_date"] else "",
    ]
    return ["NULL" if c == "" else c for c in cells] + [row.get("notes", "")]


INFUSION_HEADER = ["Encounter CSN", "Department", "MRN", "Treatment Course", "Session #", "Course Phase",
                   "Arrived", "Visit Date", "Medication", "Route", "Setting", "Cancelled (Y/N)",
                   "Supervising Clinician", "Supervisor Credential", "ACLS Exp", "2nd BLS Staff",
                   "Prescriber On Site", "Consent Signed", "Dosing Wt", "Dose", "Devices", "Pre BP Taken",
                   "BP Pre", "BP Override", "Admin Start", "Admin End", "SpO2 Monitored", "Monitoring End",
                   "Discharged", "Escort", "No-Drive Instr", "PMF Sent", "Comments"]


def _csv_line(cells: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf, delimiter=";", lineterminator="\n").writerow(cells)
    return buf.getvalue()


def _write_vendor_csv(path: Path, header: list[str], rows: Iterable[tuple[Row, list[str]]]) -> Broken:
    broken: Broken = []
    with open(path, "w", newline="", encoding="cp1252") as fh:
        fh.write(_csv_line(header))
        for line, (row, cells) in enumerate(rows, start=2):
            defect = row.get("_defect")
            text = _csv_line(cells)
            if defect == "short_row":
                text = _csv_line(cells[:-1])                     # the comments cell is missing
            elif defect == "extra_cell":
                text = _csv_line(cells[:-1])[:-1] + ";pt anxious; BP rechecked\n"   # unquoted ";"
            if "_bad" in row:
                broken.append((path.name, line, str(row["_bad"])))
            fh.write(text)
    return broken


FLOWSHEET_HEADER = ["Reading ID", "Encounter CSN", "MRN", "Taken At", "Filed At", "Dose Start", "Row Name", "Value"]


def flowsheet_rows(rows: list[Row]) -> Iterable[tuple[Row, list[str]]]:
    """The vitals in long form: one row per measurement. A reading exported twice is filed again
    (a later "Filed At"): a group of its own with the same Reading ID."""
    for row in rows:
        taken = row["measured_at"]
        filed_base = dt.datetime.fromisoformat(taken) if valid("datetime", taken) else None
        filed = us_datetime((filed_base + dt.timedelta(minutes=2 + 60 * _duplicate(row))).isoformat()) \
            if filed_base else "NULL"
        head = [row["vital_id"], row["session_id"] or "--", row["patient_id"], us_datetime(taken), filed,
                us_datetime(row["dose_start_time"]) if row["dose_start_time"] else "--"]
        measures = [("Reading Phase", row["phase"] or "--")]
        bp = blood_pressure(row["sbp_mmhg"], row["dbp_mmhg"])
        measures.append(("BP", bp or "--"))                      # a cuff error charts "--"
        if row["hr_bpm"]:
            measures.append(("Pulse", row["hr_bpm"]))
        if row["spo2_pct"]:
            measures.append(("SpO2", row["spo2_pct"]))
        for k, (name, value) in enumerate(measures):
            yield (row if k == 0 else {}), head + [name, value]


SCALE_HEADER = ["Scale ID", "MRN", "Encounter CSN", "Administered", "Scale", "Total", "Item 9", "Risk Level"]


def scale_row(row: Row) -> list[str]:
    cells = [row["assessment_id"], row["patient_id"], row["session_id"],
             us_datetime(row["administered_at"]) if row["administered_at"] else "",
             _label(INSTRUMENT_LABELS, row["instrument"]), row["total_score"], row["item9_score"],
             _label(RISK_LABELS, row["risk_level"])]
    return ["--" if c == "" else c for c in cells]


ENROLLMENT_HEADER = ["Enrollment #", "MRN", "Department", "Enrolled On", "Enrolling Prescriber"]


def enrollment_row(row: Row) -> list[str]:
    cells = [row["enrollment_id"], row["patient_id"], row["site_id"],
             us_date(row["enrolled_date"]) if row["enrolled_date"] else "", row["enrolled_by"]]
    return ["NULL" if c == "" else c for c in cells]


CREDENTIAL_HEADER = ["Credential #", "Employee ID", "Department", "Job Title", "Credential Type", "Issue Date",
                     "Expiration Date", "Verified Date"]
CREDENTIAL_LABELS = {"license": "State License", "acls": "ACLS", "bls": "BLS"}


def credential_row(row: Row) -> list[str]:
    """A roster credential as the vendor's staff-credentials row (an issue date that is no date
    passes through as typed, which no US date format reads)."""
    cells = [row["credential_id"], row["staff_id"], row["site_id"], row["role"],
             _label(CREDENTIAL_LABELS, row["kind"]),
             *(us_date(row[c]) if row[c] else "" for c in ("issued_on", "expires_on", "verified_on"))]
    return ["NULL" if c == "" else c for c in cells]


INTERVENTION_HEADER = ["Intervention ID", "Encounter CSN", "MRN", "Performed", "Action", "Indication",
                       "Performed By"]
INTERVENTION_LABELS = {
    "kind": {"repeat_bp": "BP Repeated", "physician_notified": "Provider Notified",
             "infusion_paused": "Infusion Paused", "infusion_stopped": "Infusion Stopped",
             "medication": "PRN Medication", "oxygen": "O2 Applied", "stimulation": "Verbal/Tactile Stimulation"},
    "reason": {"hypertension": "Elevated BP", "hypoxia": "Low SpO2", "tachycardia": "Tachycardia",
               "sedation": "Oversedation", "other": "Other"},
}


def intervention_row(row: Row) -> list[str]:
    """An intervention as the vendor's row (an action keyed as free text passes through as typed,
    which is none of the action labels)."""
    cells = [row["intervention_id"], row["session_id"], row["patient_id"],
             us_datetime(row["performed_at"]) if row["performed_at"] else "",
             _label(INTERVENTION_LABELS["kind"], row["kind"]), _label(INTERVENTION_LABELS["reason"], row["reason"]),
             row["performed_by"]]
    return ["NULL" if c == "" else c for c in cells]


PROBLEM_HEADER = ["Problem ID", "MRN", "ICD-10-CM", "Problem", "Onset Date", "Resolved Date", "Noted",
                  "Noted By"]


def problem_row(row: Row) -> list[str]:
    """A problem-list entry as the vendor's row (an onset in month 13 becomes 13/../...., which no
    US date format reads)."""
    cells = [row["problem_id"], row["patient_id"], row["code"], row.get("display", ""),
             *(us_date(row[c]) if row[c] else "" for c in ("onset_on", "resolved_on")),
             us_datetime(row["recorded_at"]) if row["recorded_at"] else "", row["recorded_by"]]
    return ["NULL" if c == "" else c for c in cells]


REGISTRATION_HEADER = ["Registration #", "MRN", "Registered", "Sex", "Birth Year", "Childbearing Potential"]


def registration_row(row: Row) -> list[str]:
    """A registration as the vendor's row; one exported twice is the same row twice."""
    cells = [row["profile_id"], row["patient_id"], us_datetime(row["registered_at"]) if row["registered_at"] else "",
             _label(SEX_LABELS, row["sex"]), row["birth_year"], _flag(row["childbearing_potential"])]
    return ["NULL" if c == "" else c for c in cells]


PREGNANCY_TEST_HEADER = ["Accession #", "MRN", "Collected", "Test", "Result"]
PREGNANCY_TEST_LABELS = {
    "method": {"urine_hcg": "hCG, Urine (Qual)", "serum_hcg": "hCG, Serum (Qual)"},
    "result": {"negative": "Negative", "positive": "Positive", "invalid": "Invalid"},
}


def pregnancy_test_row(row: Row) -> list[str]:
    """A pregnancy test as the vendor's lab-result row (a result keyed as free text passes through)."""
    cells = [row["test_id"], row["patient_id"], us_datetime(row["collected_at"]) if row["collected_at"] else "",
             _label(PREGNANCY_TEST_LABELS["method"], row["method"]),
             _label(PREGNANCY_TEST_LABELS["result"], row["result"])]
    return ["NULL" if c == "" else c for c in cells]


ADVERSE_EVENT_HEADER = ["Event ID", "Encounter CSN", "MRN", "Medication", "Event", "Onset", "Severity",
                        "Serious (Y/N)", "Action Taken", "Outcome", "Reported To", "Report #", "Reported",
                        "Recorded By"]
ADVERSE_EVENT_LABELS = {
    "ae_type": {"hypertension": "Hypertension", "tachycardia": "Tachycardia", "desaturation": "Desaturation",
                "resp_depression": "Respiratory Depression", "sedation_excess": "Excessive Sedation",
                "loss_of_consciousness": "Loss of Consciousness", "emesis": "Emesis", "nausea": "Nausea",
                "dissociation_distress": "Dissociative Distress", "agitation": "Agitation", "other": "Other"},
    "severity": {"mild": "Mild", "moderate": "Moderate", "severe": "Severe"},
    "action": {"none": "No Action", "paused": "Infusion Paused", "stopped": "Infusion Stopped",
               "medication": "Medication Given", "oxygen": "O2 Applied", "ed_transfer": "Transferred to ED"},
    "outcome": {"resolved": "Resolved", "ongoing": "Ongoing", "transferred": "Transferred"},
    "reported_to": {"none": "Not Reported", "internal": "Incident Report", "fda_medwatch": "FDA MedWatch",
                    "rems": "SPRAVATO REMS"},
}


def adverse_event_row(row: Row) -> list[str]:
    """An adverse event as the vendor's safety-event row (an onset on 30 February becomes
    02/30/.... in US form, which no US datetime format reads)."""
    labels = ADVERSE_EVENT_LABELS
    cells = [row["ae_id"], row["session_id"], row["patient_id"], _label(SESSION_LABELS["drug"], row["drug"]),
             _label(labels["ae_type"], row["ae_type"]), us_datetime(row["onset_at"]) if row["onset_at"] else "",
             _label(labels["severity"], row["severity"]), _flag(row["serious"]),
             _label(labels["action"], row["action"]), _label(labels["outcome"], row["outcome"]),
             _label(labels["reported_to"], row["reported_to"]), row["report_ref"],
             us_datetime(row["reported_at"]) if row["reported_at"] else "", row["recorded_by"]]
    return ["NULL" if c == "" else c for c in cells]


TREATMENT_REVIEW_HEADER = ["Review ID", "MRN", "Treatment Course", "Reviewed", "Decision", "Rationale",
                           "Reviewing Provider"]
DECISION_LABELS = {"continue": "Continue Treatment", "stop": "Discontinue", "reinduce": "Re-induce",
                   "refer": "Refer Out"}


def treatment_review_row(row: Row) -> list[str]:
    """An end-of-induction review as the vendor's row (a decision keyed as free text passes through
    as typed, which is none of the decision labels)."""
    cells = [row["review_id"], row["patient_id"], row["course_id"],
             us_datetime(row["reviewed_at"]) if row["reviewed_at"] else "", _label(DECISION_LABELS, row["decision"]),
             row["reason"], row["reviewed_by"]]
    return ["NULL" if c == "" else c for c in cells]


CONSENT_FORM_HEADER = ["Form Version", "Consent Form", "Form Title", "Effective", "Retired", "Re-consent Required"]
CONSENT_FORM_LABELS = {"ketamine_iv": "Ketamine Infusion (IV)", "spravato": "SPRAVATO (esketamine)"}


def consent_form_row(row: Row) -> list[str]:
    """A consent form version as the vendor's document-library row (the title passes through as the
    canonical file's extra column does; an effective date that is no date would pass through as
    typed, which no US date format reads)."""
    cells = [row["form_version"], _label(CONSENT_FORM_LABELS, row["form"]), row.get("title", ""),
             *(us_date(row[c]) if row[c] else "" for c in ("effective_on", "retired_on")),
             _flag(row["reconsent_required"])]
    return ["NULL" if c == "" else c for c in cells]


CONSENT_HEADER = ["Document ID", "MRN", "Consent Form", "Form Version", "Signed", "Witnessed By"]


def consent_row(row: Row) -> list[str]:
    """A signed consent as the vendor's scanned-document row (a signing day of 31 April becomes
    04/31/...., which no US date format reads)."""
    cells = [row["consent_id"], row["patient_id"], _label(CONSENT_FORM_LABELS, row["form"]), row["form_version"],
             us_date(row["signed_on"]) if row["signed_on"] else "", row["witness_id"]]
    return ["NULL" if c == "" else c for c in cells]


SCREENING_HEADER = ["Screen ID", "MRN", "Screened", "Instrument", "Score", "Sex", "Administered By",
                    "Reviewed By", "Reviewed"]
FIXED_TIME = dt.datetime(2026, 10, 1, 6, 0, 0)


def screening_cells(row: Row) -> list[Any]:
    """A screening as spreadsheet cells: "Screened" a real Excel date-time (local wall clock),
    "Reviewed" text; a value Excel cannot hold (30 February) or a score that is no number is text."""
    at = row["screened_at"]
    screened: Any = dt.datetime.fromisoformat(at).astimezone(TZ).replace(tzinfo=None) \
        if valid("datetime", at) else us_datetime(at)
    score: Any = int(row["total_score"]) if valid("integer", row["total_score"]) else row["total_score"]
    return [row["screening_id"], row["patient_id"], screened, _label(INSTRUMENT_LABELS, row["instrument"]),
            None if score == "" else score, _label(SEX_LABELS, row["sex"]) or None,
            row["administered_by"] or None, row["reviewed_by"] or None,
            us_datetime(row["reviewed_at"]) if row["reviewed_at"] else None]


def write_screenings_xlsx(path: Path, rows: list[Row]) -> Broken:
    """The screenings workbook: an "About" sheet first, the data on "Screenings" (header on row 1)."""
    from openpyxl import Workbook

    wb = Workbook()
    about = wb.active
    about.title = "About"
    about.append(["Acme EHR substance-use screening extract"])
    sheet = wb.create_sheet("Screenings")
    sheet.append(SCREENING_HEADER)
    broken: Broken = []
    for line, row in enumerate(rows, start=2):
        sheet.append(screening_cells(row))
        sheet.cell(line, 3).number_format = "mm/dd/yyyy hh:mm AM/PM"
        if "_bad" in row:
            broken.append((path.name, line, str(row["_bad"])))
    wb.properties.creator = "Acme EHR"
    wb.properties.created = wb.properties.modified = FIXED_TIME
    buf = io.BytesIO()
    wb.save(buf)
    _deterministic_zip(buf.getvalue(), path)
    return broken


def _deterministic_zip(data: bytes, path: Path) -> None:
    """Rewrite a zip with fixed entry times (openpyxl stamps the save time) and a fixed core.xml."""
    stamp = FIXED_TIME.strftime("%Y-%m-%dT%H:%M:%SZ")
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            body = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                body = re.sub(rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*", rb"\g<1>" + stamp.encode(), body)
            dst.writestr(zipfile.ZipInfo(info.filename, date_time=(2026, 10, 1, 6, 0, 0)), body,
                         compress_type=zipfile.ZIP_DEFLATED)


# The vendor's one-row-per-record files after the workbook: file name, header, row writer, canonical file
VENDOR_TABLES: list[tuple[str, list[str], Callable[[Row], list[str]], str]] = [
    ("Interventions.csv", INTERVENTION_HEADER, intervention_row, "interventions"),
    ("Problem_List.csv", PROBLEM_HEADER, problem_row, "problems"),
    ("Registrations.csv", REGISTRATION_HEADER, registration_row, "profiles"),
    ("Pregnancy_Tests.csv", PREGNANCY_TEST_HEADER, pregnancy_test_row, "pregnancy_tests"),
    ("Adverse_Events.csv", ADVERSE_EVENT_HEADER, adverse_event_row, "adverse_events"),
    ("Treatment_Reviews.csv", TREATMENT_REVIEW_HEADER, treatment_review_row, "treatment_reviews"),
    ("Consent_Forms.csv", CONSENT_FORM_HEADER, consent_form_row, "consent_forms"),
    ("Consents.csv", CONSENT_HEADER, consent_row, "consents"),
]


def write_vendor(files: Files, out: Path) -> Broken:
    """The export as Acme EHR would write it, in ``out``. Returns the planted bad rows."""
    out.mkdir(parents=True, exist_ok=True)
    sessions = files["sessions"][1]
    broken = _write_vendor_csv(out / "Infusions.csv", INFUSION_HEADER, ((r, infusion_row(r)) for r in sessions))
    broken += _write_vendor_csv(out / "Flowsheet_Vitals.csv", FLOWSHEET_HEADER, flowsheet_rows(files["vitals"][1]))
    broken += _write_vendor_csv(out / "Scales.csv", SCALE_HEADER,
                                ((r, scale_row(r)) for r in files["assessments"][1]))
    broken += _write_vendor_csv(out / "REMS_Enrollments.csv", ENROLLMENT_HEADER,
                                ((r, enrollment_row(r)) for r in files["enrollments"][1]))
    broken += _write_vendor_csv(out / "Staff_Credentials.csv", CREDENTIAL_HEADER,
                                ((r, credential_row(r)) for r in files["credentials"][1]))
    broken += write_screenings_xlsx(out / "Screenings.xlsx", files["screenings"][1])
    for name, header, row_of, stem in VENDOR_TABLES:
        broken += _write_vendor_csv(out / name, header, ((r, row_of(r)) for r in files[stem][1]))
    return broken


def number_text(value: Any) -> str:
    """A JSON number as canonical text would write it (for comparisons in tests)."""
    try:
        return format(Decimal(str(value)).normalize(), "f")
    except InvalidOperation:
        return str(value)
