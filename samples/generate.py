#!/usr/bin/env python3
"""Deterministic synthetic export of IV ketamine sessions for the ``ketamine-iv`` rule pack.

Run ``python samples/generate.py`` (from anywhere) to rewrite ``sessions.csv`` and
``sessions.ndjson`` next to this file. ``--sessions N --patients P --out DIR`` make other
sizes (a benchmark can also ``import`` this module and call :func:`generate`).

Standard library only. The same arguments always give byte-identical files.

The data imitate one year of a two-site IV racemic ketamine clinic (distributions from
the domain reference, section 7) with planted non-compliance, missing values and a few
malformed rows. ``samples/README.md`` describes what is planted.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import itertools
import json
import math
import random
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

SEED = 20261126
DEFAULT_SESSIONS = 2400
DEFAULT_PATIENTS = 200
WINDOW_START = dt.date(2025, 10, 1)
WINDOW_END = dt.date(2026, 9, 30)
WINDOW_DAYS = (WINDOW_END - WINDOW_START).days + 1
TZ = ZoneInfo("America/Los_Angeles")
Row = dict[str, str]   # one export row: column -> text ("" = missing); "_bad"/"_defect" mark planted defects
UTC = dt.UTC

# Export columns, in file order, with the type the ketamine-iv pack declares for them.
# site_id, course_id and notes are extra export columns the pack does not declare.
COLUMNS: dict[str, str] = {
    "session_id": "string",
    "site_id": "extra",
    "patient_id": "string",
    "course_id": "extra",
    "session_number_in_course": "integer",
    "session_start": "datetime",
    "session_date": "date",
    "route": "enum",
    "cancelled": "boolean",
    "supervising_clinician_id": "string",
    "supervising_role": "enum",
    "acls_expiry": "date",
    "second_bls_staff_id": "string",
    "consent_signed_date": "date",
    "dosing_weight_kg": "number",
    "dose_mg": "number",
    "predose_bp_time": "datetime",
    "predose_sbp": "integer",
    "predose_dbp": "integer",
    "predose_bp_override": "boolean",
    "dose_start_time": "datetime",
    "dose_end_time": "datetime",
    "spo2_monitored": "boolean",
    "discharge_time": "datetime",
    "escort_present": "boolean",
    "no_drive_instruction_given": "boolean",
    "notes": "extra",
}

# ----------------------------------------------------------------------------- clinic setup

# Supervising clinicians: role, site, ACLS cards as (issued, expires). The export carries
# the expiry of the latest card issued on or before the session date, so a lapse between
# an expiry and a late renewal shows as an expired card (STAFF-02, clustered on 2 people).
CLINICIANS: dict[str, tuple[str, list[tuple[dt.date, dt.date]]]] = {
    "CL-001": ("MD", [(dt.date(2024, 6, 3), dt.date(2026, 6, 30)),
                      (dt.date(2026, 6, 12), dt.date(2028, 6, 30))]),
    "CL-002": ("DO", [(dt.date(2025, 2, 10), dt.date(2027, 2, 28))]),
    "CL-003": ("NP", [(dt.date(2024, 11, 18), dt.date(2026, 11, 30))]),
    "CL-004": ("CRNA", [(dt.date(2024, 1, 22), dt.date(2026, 1, 31)),   # lapse 2026-02-01..02-22
                        (dt.date(2026, 2, 23), dt.date(2028, 2, 29))]),
    "CL-005": ("PA", [(dt.date(2025, 8, 4), dt.date(2027, 8, 31))]),
    "CL-006": ("NP", [(dt.date(2025, 4, 14), dt.date(2027, 4, 30))]),
    "CL-007": ("NP", [(dt.date(2024, 5, 20), dt.date(2026, 5, 31)),     # lapse 2026-06-01..06-28
                      (dt.date(2026, 6, 29), dt.date(2028, 6, 30))]),
    "CL-008": ("MD", [(dt.date(2025, 1, 13), dt.date(2027, 1, 31))]),
    "CL-009": ("RN", [(dt.date(2025, 3, 3), dt.date(2027, 3, 31))]),     # charge nurse (STAFF-01)
    "CL-010": ("CRNA", [(dt.date(2024, 10, 7), dt.date(2026, 10, 31))]),
    "CL-011": ("PA", [(dt.date(2025, 9, 8), dt.date(2027, 9, 30))]),
    "CL-012": ("DO", [(dt.date(2024, 12, 2), dt.date(2026, 12, 31))]),
}
# Who supervises, by site and shift ("day" weekdays before 16:00, "late" evenings/Saturday).
ROSTER = {
    ("SITE-01", "day"): (["CL-001", "CL-002", "CL-003", "CL-004", "CL-005"], [20, 20, 18, 26, 16]),
    ("SITE-01", "late"): (["CL-006", "CL-004"], [60, 40]),
    ("SITE-02", "day"): (["CL-007", "CL-008", "CL-010", "CL-011"], [32, 24, 24, 20]),
    ("SITE-02", "late"): (["CL-012", "CL-007", "CL-009"], [62, 32, 6]),
}
BLS_STAFF = {"SITE-01": ["CL-021", "CL-022", "CL-023", "CL-024", "CL-025"],
             "SITE-02": ["CL-026", "CL-027", "CL-028", "CL-029", "CL-030"]}
HOLIDAYS = {dt.date(2025, 11, 27), dt.date(2025, 12, 25), dt.date(2026, 1, 1),
            dt.date(2026, 5, 25), dt.date(2026, 7, 3), dt.date(2026, 9, 7),
            dt.date(2026, 11, 26), dt.date(2026, 12, 25), dt.date(2027, 1, 1)}
SLOTS = {"morning": (8 * 60, 11 * 60 + 30), "midday": (12 * 60, 15 * 60 + 30),
         "evening": (16 * 60, 18 * 60 + 30)}
SATURDAY_SLOT = (8 * 60, 11 * 60 + 30)

INDUCTION = {"thrice": [0, 2, 4, 7, 9, 11], "twice": [0, 3, 7, 10, 14, 17]}

# Free-text notes: most rows have none.
NOTES = ["tolerated well", "mild nausea, ondansetron 4 mg IV", "dissociation resolved before discharge",
         "IV re-sited x1", "eyeshade and music", "anxious pre-infusion, reassured",
         "headache post infusion, resolved", "late arrival", "spouse drove", "dizzy on standing, resolved",
         "PHQ-9 done in waiting room", "requested dimmed lights", "brief tearfulness during infusion"]
CANCEL_NOTES = ["cancelled: patient unwell", "cancelled: no escort available", "cancelled: no-show",
                "cancelled: rescheduled by patient", "cancelled: IV access failed"]
# Malformed supervising-clinician entries (STAFF-04): free text or hand-typed IDs.
BAD_IDS = ["Dr. Okafor", "CL-11", "cl-008", "CL008", "CL-0044", "R. Nguyen NP"]

# Probability that a field is left empty on a non-cancelled row (documentation gaps).
BLANK_RATES = {
    "route": 0.003, "cancelled": 0.0015, "session_date": 0.003, "session_number_in_course": 0.005,
    "supervising_role": 0.005, "acls_expiry": 0.008, "dosing_weight_kg": 0.008, "dose_mg": 0.005,
    "predose_bp_time": 0.008, "predose_bp_override": 0.01, "dose_start_time": 0.005,
    "dose_end_time": 0.01, "spo2_monitored": 0.01, "discharge_time": 0.012,
    "escort_present": 0.006, "no_drive_instruction_given": 0.01,
}


@dataclass
class Patient:
    idx: int
    pid: str
    site: str
    sex: str
    weight: float
    hypertensive: bool
    sbp_mean: float
    dbp_mean: float
    slot: str
    slow_protocol: bool          # 100-min infusion protocol
    escort_unreliable: bool
    titration: list[float]       # target mg/kg after the 1st, 2nd, ... session of a course
    sessions: list[int] = field(default_factory=list)  # packed (day ordinal, course, n in course)
    consent: dict[int, str] = field(default_factory=dict)                   # course -> date text
    course_start: dict[int, dt.date] = field(default_factory=dict)


def _id(prefix: str, number: int, width: int) -> str:
    return f"{prefix}-{number:0{width}d}"


def _lognormal(rng: random.Random, mean: float, sd: float) -> float:
    sigma2 = math.log(1 + (sd / mean) ** 2)
    return rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(TZ).isoformat(timespec="seconds")


def _local(day: dt.date, minute: int) -> dt.datetime:
    """A local wall-clock time as an aware UTC datetime (fold=0 on DST changes)."""
    naive = dt.datetime.combine(day, dt.time(minute // 60, minute % 60))
    return naive.replace(tzinfo=TZ).astimezone(UTC)


# ----------------------------------------------------------------------------- schedules

def _quotas(rng: random.Random, n_sessions: int, n_patients: int) -> list[int]:
    """Sessions per patient: drop-outs, induction-only and maintenance continuers (§7.2),
    scaled so they sum to exactly ``n_sessions``."""
    raw = []
    for _ in range(n_patients):
        u = rng.random()
        if u < 0.07:
            raw.append(rng.randint(1, 5))                      # dropped out during induction
        elif u < 0.40:
            raw.append(rng.choice([5, 6, 6, 6, 6, 6, 6, 7]))  # induction only
        else:
            raw.append(6 + min(40, 1 + int(rng.expovariate(1 / 10.5))))
    scale = n_sessions / sum(raw)
    exact = [r * scale for r in raw]
    quotas = [max(1, int(e)) for e in exact]
    # Largest remainder first, then round-robin, to hit the total exactly.
    order = sorted(range(n_patients), key=lambda i: (exact[i] - int(exact[i])), reverse=True)
    diff = n_sessions - sum(quotas)
    i = 0
    while diff != 0:
        j = order[i % n_patients]
        if diff > 0:
            quotas[j] += 1
            diff -= 1
        elif quotas[j] > 1:
            quotas[j] -= 1
            diff += 1
        i += 1
    return quotas


def _offsets(rng: random.Random) -> Iterator[tuple[int, int, int]]:
    """Endless (day offset, course number, session number in course) of one patient's
    treatment: induction, maintenance with widening intervals, now and then a lapse and a
    re-induction. The prefix does not depend on how many sessions are taken."""
    course, day = 1, 0
    while True:
        u = rng.random()
        if course > 1:
            pattern = [0, 3, 7, 10]                            # re-induction, twice weekly
        elif u < 0.60:
            pattern = list(INDUCTION["thrice"])
        elif u < 0.95:
            pattern = list(INDUCTION["twice"])
        else:
            pattern, acc = [], 0
            for _ in range(6):
                pattern.append(acc)
                acc += rng.randint(2, 6)
        n = 0
        for off in pattern:
            n += 1
            yield day + off, course, n
        day += pattern[-1]
        # Maintenance: intervals widen from ~5 days to 21-28 days over ~5 months (§7.2).
        j = 0
        while True:
            if j >= 8 and rng.random() < 0.04:                 # lapse, then a new course
                day += rng.randint(45, 120)
                course += 1
                break
            base = 5 + 21 * min(1.0, j / 9)
            day += max(4, round(base * rng.uniform(0.85, 1.2)))
            n += 1
            j += 1
            yield day, course, n


def _count_within(stream: Iterator[tuple[int, int, int]], last_day: int) -> int:
    return sum(1 for _ in itertools.takewhile(lambda item: item[0] <= last_day, stream))


def _clinic_day(rng: random.Random, day: dt.date, site: str, taken: set[dt.date]) -> dt.date:
    """Move a session off Sundays, holidays, Saturdays at SITE-01 and days already used
    (never to before the export window)."""
    back = day > WINDOW_START + dt.timedelta(days=2)
    while True:
        wd = day.weekday()
        if wd == 6:
            day += dt.timedelta(days=rng.choice(([1, 1, -2] if site == "SITE-01" else [1, 1, -1])
                                                if back else [1]))
        elif wd == 5 and site == "SITE-01":
            day += dt.timedelta(days=rng.choice([-1, 2] if back else [2]))
        elif day in HOLIDAYS or day in taken:
            day += dt.timedelta(days=1)
        else:
            return day


def _make_patients(rng: random.Random, n_sessions: int, n_patients: int, seed: int) -> list[Patient]:
    width = max(4, len(str(n_patients)))
    # One year by default; a longer history when asked for more than ~12 sessions a patient.
    window = max(WINDOW_DAYS, round(WINDOW_DAYS * n_sessions / n_patients / 12))
    usable = window - 12                                    # room to align and shift days
    def schedule(i: int) -> Iterator[tuple[int, int, int]]:   # the same stream every time
        return _offsets(random.Random(f"{seed}:schedule:{i}"))

    while True:                                             # how many sessions fit per patient
        capacity = [_count_within(schedule(i), usable) for i in range(n_patients)]
        if sum(capacity) >= n_sessions * 1.25:
            break
        usable = round(usable * 1.1)
    quotas = [min(q, c) for q, c in zip(_quotas(rng, n_sessions, n_patients), capacity, strict=True)]
    if max(capacity) >= 1 << 16:
        raise ValueError("too many sessions per patient (at most 65,535)")
    # Sessions that did not fit go to other patients who still have room, continuers first.
    spare = [i for i in range(n_patients) if quotas[i] < capacity[i]]
    rng.shuffle(spare)
    spare.sort(key=lambda i: quotas[i] < 7)
    deficit = n_sessions - sum(quotas)
    while deficit > 0:
        spare = [i for i in spare if quotas[i] < capacity[i]]
        for i in spare[:deficit]:
            quotas[i] += 1
            deficit -= 1
    patients = []
    for i in range(n_patients):
        sex = "F" if rng.random() < 0.64 else "M"
        weight = _lognormal(rng, 77, 19) if sex == "F" else _lognormal(rng, 90, 20)
        hyper = rng.random() < 0.33
        sbp, dbp = (rng.gauss(136, 10), rng.gauss(84, 7)) if hyper else (rng.gauss(122, 9), rng.gauss(77, 6))
        u = rng.random()
        if u < 0.85:
            titration = [0.5]
        elif u < 0.96:
            top = rng.choice([0.6, 0.65, 0.7, 0.75])
            titration = [0.5, 0.5] + ([0.5] if rng.random() < 0.5 else []) + [top]
        elif u < 0.99:
            titration = [0.5, 0.5, 0.65, 0.75, rng.choice([0.8, 0.9, 1.0])]
        else:
            titration = [0.4]
        site = "SITE-01" if rng.random() < 0.6 else "SITE-02"
        slot = rng.choices(["morning", "midday", "evening"], [45, 35, 20])[0]
        p = Patient(i, _id("P", i + 1, width), site, sex, min(190.0, max(42.0, weight)), hyper,
                    sbp, dbp, slot, rng.random() < 0.05, rng.random() < 0.04, titration)
        q = quotas[i]
        stream = list(itertools.islice(schedule(i), capacity[i] + 14))
        # Where the export window cuts this patient's treatment: some continuers were already
        # in treatment when the window opened (their course and consent predate it), some are
        # still in treatment when it closes; the others start and stop inside it.
        carried = 0.7 if q > 0.6 * capacity[i] else 0.3       # long treatment: likely begun earlier
        skip = rng.randint(6, 13) if q >= 7 and rng.random() < carried else 0
        if skip and stream[skip + q - 1][0] - stream[skip][0] > usable:
            skip = 0
        first, last = stream[skip][0], stream[skip + q - 1][0]
        if skip:
            base = rng.randint(0, stream[skip][0] - stream[skip - 1][0] - 1) - first
        elif q >= 7 and rng.random() < 0.4:
            base = max(0, usable - last - rng.randint(0, max(0, last - stream[q - 2][0] - 1)))
        else:
            base = rng.randint(0, usable - last)
        start = WINDOW_START + dt.timedelta(days=base)
        if not skip and start.weekday() > 1:                # courses start on a Monday/Tuesday
            start += dt.timedelta(days=7 - start.weekday() + rng.choice([0, 0, 1]))
        for off, course, n in stream[:skip]:                # courses begun before the window
            if n == 1:
                p.course_start[course] = start + dt.timedelta(days=off)
        taken: set[dt.date] = set()
        for off, course, n in stream[skip:skip + q]:
            day = _clinic_day(rng, start + dt.timedelta(days=off), site, taken)
            taken.add(day)
            p.sessions.append((day.toordinal() << 32) | (course << 16) | n)
            if n == 1 or course not in p.course_start:
                p.course_start[course] = day
        patients.append(p)
    return patients


def _consents(rng: random.Random, p: Patient) -> None:
    """Consent per course: signed at a consult before the first session, renewed for a new
    course when older than 300 days; ~1.5% of courses none, ~1.5% signed late (CONS-01)."""
    last: dt.date | None = None
    for course, start in sorted(p.course_start.items()):
        u = rng.random()
        if u < 0.015:
            p.consent[course] = ""
            continue
        if last is not None and (start - last).days < 300:
            p.consent[course] = last.isoformat()
            continue
        signed = start - dt.timedelta(days=rng.choice([0, 0, 1, 2, 3, 5, 7, 7, 10, 14]))
        if u < 0.03:
            signed = start + dt.timedelta(days=rng.randint(2, 6))      # signed after the 1st session
        p.consent[course] = signed.isoformat()
        last = signed


# ----------------------------------------------------------------------------- rows

def _session_row(rng: random.Random, p: Patient, day: dt.date, course: int, n: int) -> Row:
    site = p.site
    late_shift = day.weekday() == 5 or p.slot == "evening"
    if day.weekday() == 5:
        lo, hi = SATURDAY_SLOT
    else:
        lo, hi = SLOTS[p.slot]
    minute = lo + 15 * rng.randint(0, (hi - lo) // 15)
    arrival = _local(day, minute) + dt.timedelta(minutes=rng.choice([-6, -3, 0, 0, 0, 2, 4, 7, 11]))
    names, weights = ROSTER[(site, "late" if late_shift else "day")]
    clinician = rng.choices(names, weights)[0]
    role, cards = CLINICIANS[clinician]
    card = max((c for c in cards if c[0] <= day), default=cards[0])
    row = {c: "" for c in COLUMNS}
    row.update({
        "session_id": "",                        # numbered in export order
        "site_id": site,
        "patient_id": p.pid,
        "course_id": f"C-{p.pid[2:]}-{course:02d}",
        "session_number_in_course": str(n),
        "session_start": _iso(arrival),
        "session_date": arrival.astimezone(TZ).date().isoformat(),
        "route": "IV",
        "cancelled": "false",
        "supervising_clinician_id": clinician,
        "supervising_role": role,
        "acls_expiry": card[1].isoformat(),
        "second_bls_staff_id": rng.choice(BLS_STAFF[site]),
        "consent_signed_date": p.consent[course],
    })
    # Weight drifts slowly; the dosing weight is the actual body weight measured that day.
    p.weight = max(40.0, p.weight + rng.gauss(0, 0.35))
    weight = round(p.weight, 1)

    # ---- cancellations (~2% generic; more below for BP holds)
    if rng.random() < 0.015:
        row["cancelled"] = "true"
        row["notes"] = rng.choice(CANCEL_NOTES)
        for col in ("second_bls_staff_id",):
            row[col] = ""
        return row

    # ---- pre-dose BP, with the clinic's hold at 160/100 (VIT-02)
    sbp = round(p.sbp_mean + rng.gauss(0, 8) + rng.choice([0, 0, 0, 3, 6]))
    dbp = round(p.dbp_mean + rng.gauss(0, 6))
    bp_time = arrival + dt.timedelta(minutes=rng.randint(4, 15))
    bp_recorded = True
    override, note = "false", ""
    if rng.random() < 0.003:                                # planted: dosed over the hold
        sbp, dbp = rng.randint(160, 178), max(dbp, rng.randint(88, 104))
    elif sbp >= 160 or dbp >= 100:
        if rng.random() < 0.5:                              # repeat after rest settles it
            bp_time += dt.timedelta(minutes=rng.randint(10, 15))
            sbp = min(sbp - rng.randint(8, 20), 158)
            dbp = min(dbp - rng.randint(4, 10), 98)
            note = "BP rechecked after 10 min rest"
        elif rng.random() < 0.5:
            override = "true"
            note = f"BP {sbp}/{dbp}, asymptomatic; dosed per prescriber override"
        else:
            row.update({"cancelled": "true", "predose_bp_time": _iso(bp_time),
                        "predose_sbp": str(sbp), "predose_dbp": str(dbp),
                        "notes": f"held: pre-dose BP {sbp}/{dbp}"})
            row["second_bls_staff_id"] = ""
            return row
    dose_start = bp_time + dt.timedelta(minutes=rng.choice([3, 5, 6, 8, 10, 12, 15, 18, 22]))
    u = rng.random()
    if u < 0.010:                                           # planted VIT-01: stale BP
        bp_time = dose_start - dt.timedelta(minutes=rng.randint(35, 80))
    elif u < 0.015:                                         # planted VIT-01: charted after start
        bp_time = dose_start + dt.timedelta(minutes=rng.randint(2, 12))
    elif u < 0.022:                                         # planted VIT-01: not recorded
        bp_recorded = False

    # ---- dose (DOSE-01, DOSE-02)
    plan = p.titration
    target = plan[min(n - 1, len(plan) - 1)]
    if n == 1 and rng.random() < 0.04:                      # planted: course started above 0.5
        target = rng.choice([0.6, 0.65, 0.7, 0.75])
    dose = math.floor(target * weight * 10 + 1e-6) / 10
    u = rng.random()
    if u < 0.0035:                                          # planted: computed from pounds
        dose = math.floor(target * weight * 2.2046 * 10) / 10
    elif u < 0.006:                                         # planted: decimal slip
        dose = math.floor(target * weight) / 10

    # ---- infusion duration (DOSE-03)
    u = rng.random()
    if u < 0.015:
        infusion = rng.randint(20, 34)                      # planted: rapid infusion
    elif p.slow_protocol:
        infusion = round(rng.gauss(100, 2.5)) if rng.random() > 0.04 else rng.randint(112, 125)
    elif u < 0.045:
        infusion = rng.randint(45, 60)
    else:
        infusion = 40 + max(-3, min(7, round(rng.gauss(0.8, 1.5))))
    dose_end = dose_start + dt.timedelta(minutes=infusion)

    # ---- observation (OBS-01): median ~40 min, first session of a course +20
    if rng.random() < (0.08 if late_shift else 0.02):
        obs = rng.randint(12, 29)                           # planted: discharged early
    else:
        obs = max(30, round(rng.triangular(30, 62, 36)))
        if n == 1:
            obs += 20
    discharge = dose_end + dt.timedelta(minutes=obs)

    # ---- staffing (STAFF-03) and monitoring / discharge documentation
    if rng.random() < {(True, "SITE-02"): 0.08, (True, "SITE-01"): 0.03}.get((late_shift, site), 0.006):
        row["second_bls_staff_id"] = ""
    spo2 = "false" if rng.random() < (0.03 if late_shift and site == "SITE-02" else 0.008) else "true"
    escort = "false" if rng.random() < (0.2 if p.escort_unreliable else 0.005) else "true"
    no_drive = "false" if rng.random() < (0.03 if site == "SITE-02" else 0.01) else "true"
    if rng.random() < 0.004:
        row["supervising_clinician_id"] = rng.choice(BAD_IDS)
    if not note and rng.random() < 0.12:
        note = rng.choice(NOTES)
    row.update({
        "dosing_weight_kg": f"{weight:.1f}",
        "dose_mg": f"{dose:.1f}",
        "predose_bp_time": _iso(bp_time) if bp_recorded else "",
        "predose_sbp": str(sbp) if bp_recorded else "",
        "predose_dbp": str(dbp) if bp_recorded else "",
        "predose_bp_override": override,
        "dose_start_time": _iso(dose_start),
        "dose_end_time": _iso(dose_end),
        "spo2_monitored": spo2,
        "discharge_time": _iso(discharge),
        "escort_present": escort,
        "no_drive_instruction_given": no_drive,
        "notes": note,
    })
    for col, rate in BLANK_RATES.items():
        if rng.random() < rate:
            row[col] = ""
    return row


# Malformed rows, at fixed fractions of the file (applied to the next non-cancelled row).
# "short_row" / "extra_cell" are structural: write_csv drops a cell / splits the notes on an
# unquoted comma, write_ndjson truncates the line / writes a JSON array instead of an object.
DEFECTS = [
    (0.08, "dose_mg", "decimal comma"),
    (0.19, "consent_signed_date", "month 13"),
    (0.31, "escort_present", "boolean 'maybe'"),
    (0.44, "predose_sbp", "BP typed as SBP/DBP in the systolic field"),
    (0.52, "route", "lower-case enum 'iv'"),
    (0.63, "session_id", "duplicate session_id (re-exported amended row)"),
    (0.75, "_defect", "short_row"),
    (0.88, "_defect", "extra_cell"),
]


def _spoil(row: Row, column: str) -> None:
    if column == "dose_mg":
        row["dose_mg"] = row["dose_mg"].replace(".", ",")
    elif column == "consent_signed_date":
        row["consent_signed_date"] = "2026-13-01"
    elif column == "escort_present":
        row["escort_present"] = "maybe"
    elif column == "predose_sbp":
        row["predose_sbp"] = f"{row['predose_sbp'] or 132}/{row['predose_dbp'] or 84}"
    elif column == "route":
        row["route"] = "iv"


def generate(n_sessions: int = DEFAULT_SESSIONS, n_patients: int = DEFAULT_PATIENTS,
             seed: int = SEED, bad_rows: bool = True) -> Iterator[Row]:
    """Yield ``n_sessions`` export rows (dicts of column -> text, empty text = missing) in
    session_start order.

    With ``bad_rows`` (and at least 20 rows) one row is a duplicate of an earlier session and
    seven others are malformed; those rows carry a ``_bad`` key describing the defect, and
    the two structural ones a ``_defect`` key ("short_row" or "extra_cell") that
    :func:`write_csv` and :func:`write_ndjson` turn into a broken line. Keys starting with
    ``_`` are not columns."""
    if n_sessions < 1 or n_patients < 1:
        raise ValueError("need at least one session and one patient")
    rng = random.Random(seed)
    n_patients = min(n_patients, n_sessions)
    planted = bad_rows and n_sessions >= 20
    unique = n_sessions - 1 if planted else n_sessions
    patients = _make_patients(rng, unique, n_patients, seed)
    for p in patients:
        _consents(rng, p)
    # One sort key per session: (day, patient, session index), packed into an int.
    order = [((packed >> 32) << 40) | (p.idx << 16) | k
             for p in patients for k, packed in enumerate(p.sessions)]
    order.sort()
    width = max(6, len(str(n_sessions)))
    pending = [(int(f * n_sessions), column, desc) for f, column, desc in DEFECTS] if planted else []
    duplicate: tuple[int, Row] | None = None
    index = 0

    def emit(row: Row) -> Iterator[Row]:
        nonlocal index, duplicate
        if pending and index >= pending[0][0] and row["cancelled"] == "false":
            _at, column, desc = pending.pop(0)
            if column == "session_id":
                dup = dict(row, notes="amended: discharge time corrected")
                if dup["discharge_time"]:
                    moment = dt.datetime.fromisoformat(dup["discharge_time"]) + dt.timedelta(minutes=5)
                    dup["discharge_time"] = _iso(moment)
                dup["_bad"] = f"{desc}: repeats {row['session_id']}"
                duplicate = (index + 37, dup)
            elif column == "_defect":
                row["_defect"] = desc
                row["_bad"] = {"short_row": "row with a missing cell (CSV) / truncated line (NDJSON)",
                               "extra_cell": "row with an extra cell (CSV) / JSON array line (NDJSON)"}[desc]
            else:
                _spoil(row, column)
                row["_bad"] = f"{column} = {row[column]!r} ({desc})"
        yield row
        index += 1
        if duplicate is not None and index == duplicate[0]:
            yield duplicate[1]
            index += 1
            duplicate = None

    seq = 0
    day_rows: list[Row] = []
    current_day = None
    for key in order + [None]:
        if key is not None:
            p = patients[(key >> 16) & 0xFFFFFF]
            packed = p.sessions[key & 0xFFFF]
            day = dt.date.fromordinal(packed >> 32)
            course, n = (packed >> 16) & 0xFFFF, packed & 0xFFFF
        if key is None or day != current_day:
            # Rows of one day are exported in session_start order, numbered as exported.
            day_rows.sort(key=lambda r: (r["session_start"], r["patient_id"]))
            for row in day_rows:
                seq += 1
                row["session_id"] = _id("S", seq, width)
                yield from emit(row)
            if key is None:
                if duplicate is not None:                   # a very short file: append it
                    yield duplicate[1]
                break
            day_rows, current_day = [], day
        day_rows.append(_session_row(rng, p, day, course, n))


# ----------------------------------------------------------------------------- writers

def write_csv(rows: Iterable[Row], path: str | Path) -> list[tuple[int, str]]:
    """Write rows as CSV (header = line 1, LF line ends). Returns (line, description) of
    the planted bad rows it wrote."""
    broken = []
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for line, row in enumerate(rows, start=2):
            cells = [row.get(c, "") for c in COLUMNS]
            defect = row.get("_defect")
            if defect == "short_row":
                cells = cells[:-1]                           # the notes cell is missing
            elif defect == "extra_cell":
                cells = cells[:-1] + ["pt anxious", " BP rechecked"]   # unquoted comma in notes
            if "_bad" in row:
                broken.append((line, row["_bad"]))
            writer.writerow(cells)
    return broken


def _json_value(kind: str, text: str) -> str | int | float | bool | None:
    """The value as a JSON export would carry it: typed when it parses, else the raw text."""
    if text == "":
        return None
    if kind == "integer" and re.fullmatch(r"-?\d+", text):
        return int(text)
    if kind == "number" and re.fullmatch(r"-?\d+(\.\d+)?", text):
        return float(text)
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    return text


def write_ndjson(rows: Iterable[Row], path: str | Path) -> list[tuple[int, str]]:
    """Write rows as NDJSON, one object per line. Returns (line, description) of the
    planted bad rows it wrote."""
    broken = []
    with open(path, "w", newline="\n", encoding="utf-8") as fh:
        for line, row in enumerate(rows, start=1):
            obj = {c: _json_value(k, row.get(c, "")) for c, k in COLUMNS.items()}
            text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
            defect = row.get("_defect")
            if defect == "short_row":
                text = text[: len(text) // 2]                # truncated: does not parse
            elif defect == "extra_cell":
                text = json.dumps(list(obj.values()), separators=(",", ":"), ensure_ascii=False)
            if "_bad" in row:
                broken.append((line, row["_bad"]))
            fh.write(text + "\n")
    return broken


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS, help="rows to write (default %(default)s)")
    ap.add_argument("--patients", type=int, default=DEFAULT_PATIENTS, help="patients (default %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED, help="random seed (default %(default)s)")
    ap.add_argument("--out", type=Path, default=here, help="output folder (default: next to this script)")
    ap.add_argument("--no-bad-rows", action="store_true", help="omit the malformed and duplicate rows")
    args = ap.parse_args(argv)
    if args.sessions < 1 or args.patients < 1:
        ap.error("--sessions and --patients must be at least 1")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = list(generate(args.sessions, args.patients, args.seed, not args.no_bad_rows)) \
        if args.sessions <= 200_000 else None

    def source() -> Iterator[Row]:
        if rows is not None:
            return iter(rows)
        return generate(args.sessions, args.patients, args.seed, not args.no_bad_rows)

    csv_path, nd_path = args.out / "sessions.csv", args.out / "sessions.ndjson"
    bad_csv = write_csv(source(), csv_path)
    bad_nd = write_ndjson(source(), nd_path)
    print(f"wrote {csv_path} and {nd_path} ({args.sessions} rows)", file=sys.stderr)
    for (line, what), (nd_line, _what) in zip(bad_csv, bad_nd, strict=True):
        print(f"  csv line {line} / ndjson line {nd_line}: {what}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
