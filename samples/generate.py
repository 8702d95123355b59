#!/usr/bin/env python3
"""Deterministic synthetic export of IV ketamine and esketamine sessions, vitals, screenings,
assessments and REMS enrollments for the ``ketamine-iv`` and ``esketamine-rems`` rule packs.

Run ``python samples/generate.py`` (from anywhere) to rewrite ``sessions.csv``,
``sessions.ndjson``, ``vitals.csv``, ``screenings.csv``, ``assessments.csv`` and
``enrollments.csv`` next to this file. ``--sessions N --patients P --out DIR`` make other sizes;
``--iv-only`` writes just the IV sessions (streamed, any size). A benchmark can also ``import``
this module and call :func:`generate` (IV sessions) or :func:`export` (every file).

Standard library only. The same arguments always give byte-identical files.

The data imitate one year of a two-site IV racemic ketamine clinic and a SPRAVATO treatment
centre with an inpatient unit (distributions from the domain reference, section 7) with
planted non-compliance, missing values and a few malformed rows. ``samples/README.md``
describes what is planted.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import heapq
import itertools
import json
import math
import random
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

SEED = 20261126
DEFAULT_SESSIONS = 2400
DEFAULT_PATIENTS = 200
WINDOW_START = dt.date(2025, 10, 1)
WINDOW_END = dt.date(2026, 9, 30)
WINDOW_DAYS = (WINDOW_END - WINDOW_START).days + 1
TZ = ZoneInfo("America/Los_Angeles")
# One export row: column -> text ("" = missing). Keys starting with "_" are not columns:
# "_bad"/"_defect" mark planted defects, "_t" (a dict) keeps a session's true times.
Row = dict[str, Any]
UTC = dt.UTC

# Session export columns, in file order, with the type both packs declare for them (the export
# mixes IV ketamine and esketamine sessions; a column that does not apply to a drug is empty).
# site_id, course_id and notes are extra export columns the packs do not declare. `notes` stays
# last: the planted "extra cell" row splits it.
COLUMNS: dict[str, str] = {
    "session_id": "string",
    "site_id": "extra",
    "patient_id": "string",
    "course_id": "extra",
    "session_number_in_course": "integer",
    "phase": "enum",
    "session_start": "datetime",
    "session_date": "date",
    "drug": "enum",
    "route": "enum",
    "setting_type": "enum",
    "cancelled": "boolean",
    "supervising_clinician_id": "string",
    "supervising_role": "enum",
    "acls_expiry": "date",
    "second_bls_staff_id": "string",
    "prescriber_onsite": "boolean",
    "consent_signed_date": "date",
    "dosing_weight_kg": "number",
    "dose_mg": "number",
    "devices_count": "integer",
    "predose_bp_time": "datetime",
    "predose_sbp": "integer",
    "predose_dbp": "integer",
    "predose_bp_override": "boolean",
    "dose_start_time": "datetime",
    "dose_end_time": "datetime",
    "spo2_monitored": "boolean",
    "monitoring_end_time": "datetime",
    "discharge_time": "datetime",
    "escort_present": "boolean",
    "no_drive_instruction_given": "boolean",
    "pmf_submitted_date": "date",
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
    makeup = random.Random(f"{seed}:makeup")
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
        previous: dt.date | None = None
        for off, course, n in stream[skip:skip + q]:
            day = _clinic_day(rng, start + dt.timedelta(days=off), site, taken)
            # Planted (SCHED-01, SCHED-01B): at SITE-02 a thrice-weekly induction's 4th infusion
            # is now and then pulled forward to the Saturday after the 3rd ("make-up" visit): the
            # 4th infusion in 6 days, under 40 h after the Friday one. Own random stream, so the
            # other columns keep their values.
            if (n == 4 and site == "SITE-02" and previous is not None and previous.weekday() == 4
                    and day.weekday() == 0 and makeup.random() < 0.25):
                saturday = previous + dt.timedelta(days=1)
                if saturday not in HOLIDAYS and saturday not in taken:
                    day = saturday
            previous = day
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

def _iv_phase(course: int, n: int) -> str:
    if course > 1:
        return "reinduction" if n <= 4 else "maintenance"
    return "induction" if n <= 6 else "maintenance"


def _session_row(rng: random.Random, aux: random.Random, p: Patient, day: dt.date, course: int,
                 n: int) -> Row:
    """One IV session row. ``rng`` draws what the original export had; ``aux`` the columns added
    with the esketamine sessions, so the older columns keep their values. The hidden ``_t`` key
    keeps the true times and readings (before documentation gaps) for the vitals, screenings
    and assessments files."""
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
    row: Row = {c: "" for c in COLUMNS}
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
        "phase": _iv_phase(course, n),
        "drug": "ketamine_racemic",
        "setting_type": "outpatient",
        # IV: a prescriber on site is not required (immediately available by phone suffices)
        "prescriber_onsite": "true" if aux.random() < 0.8 else "false",
    })
    truth: dict[str, Any] = {"course": course, "n": n, "arrival": arrival, "site": site}
    row["_t"] = truth
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
        elif rng.random() < 0.5:                            # a prescriber's decision and a repeat reading
            bp_time += dt.timedelta(minutes=12)                 # below the hold (no draw: the rest of the
            first = f"{sbp}/{dbp}"                              # data stays as it was)
            sbp, dbp = min(sbp - 10, 158), min(dbp - 5, 98)
            override = "true"
            note = f"BP {first}, asymptomatic; rechecked after rest, dosed per prescriber decision"
        else:
            row.update({"cancelled": "true", "predose_bp_time": _iso(bp_time),
                        "predose_sbp": str(sbp), "predose_dbp": str(dbp),
                        "notes": f"held: pre-dose BP {sbp}/{dbp}"})
            truth.update(bp_time=bp_time, sbp=sbp, dbp=dbp, held=True)
            row["second_bls_staff_id"] = ""
            return row
    # a reading above 140/90 (below the hold) needs the prescriber's documented benefit-risk decision
    # (VIT-02B); 4% of them are planted without one. Its own generator: the other draws stay as they were.
    if override == "false" and (sbp > 140 or dbp > 90) and sbp < 160 and dbp < 100:
        override = "true" if _decision(row["patient_id"], arrival) else "false"
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
    truth.update(bp_time=bp_time if bp_recorded else None, sbp=sbp, dbp=dbp, dose_start=dose_start,
                 dose_end=dose_end, end=discharge, discharge=discharge, hyper=p.hypertensive)
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
    """Yield ``n_sessions`` IV ketamine session rows (dicts of column -> text, empty text =
    missing) in session_start order: the IV part of the session export, usable on its own with
    the ketamine-iv pack.

    With ``bad_rows`` (and at least 20 rows) one row is a duplicate of an earlier session and
    seven others are malformed; those rows carry a ``_bad`` key describing the defect, and
    the two structural ones a ``_defect`` key ("short_row" or "extra_cell") that
    :func:`write_csv` and :func:`write_ndjson` turn into a broken line. Keys starting with
    ``_`` are not columns (``_t`` holds the true times the other files are made from)."""
    _patients, rows = _iv_export(n_sessions, n_patients, seed, bad_rows)
    yield from rows


def _iv_export(n_sessions: int, n_patients: int, seed: int,
               bad_rows: bool) -> tuple[list[Patient], Iterator[Row]]:
    """The IV patients (made at once) and their session rows (made as they are read)."""
    if n_sessions < 1 or n_patients < 1:
        raise ValueError("need at least one session and one patient")
    rng = random.Random(seed)
    aux = random.Random(f"{seed}:aux")
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

    def rows() -> Iterator[Row]:
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
            day_rows.append(_session_row(rng, aux, p, day, course, n))

    return patients, rows()


# ----------------------------------------------------------------------------- esketamine sessions

DEFAULT_ESK_SESSIONS = 800
DEFAULT_ESK_PATIENTS = 60
ESK_FIRST_PATIENT = 201      # P-0201, ...: the network's patient numbers go on after the IV clinic's
# SITE-03: outpatient SPRAVATO treatment centre (REMS certified). SITE-04: inpatient unit.
ESK_CLINICIANS: dict[str, tuple[str, list[tuple[dt.date, dt.date]]]] = {
    "CL-013": ("MD", [(dt.date(2025, 3, 10), dt.date(2027, 3, 31))]),
    "CL-014": ("NP", [(dt.date(2024, 9, 16), dt.date(2026, 9, 30))]),
    "CL-015": ("PA", [(dt.date(2025, 6, 2), dt.date(2027, 6, 30))]),
    "CL-017": ("MD", [(dt.date(2025, 1, 6), dt.date(2027, 1, 31))]),
    "CL-018": ("NP", [(dt.date(2025, 5, 5), dt.date(2027, 5, 31))]),
}
ESK_ROSTER = {"SITE-03": (["CL-013", "CL-014", "CL-015"], [40, 35, 25]),
              "SITE-04": (["CL-017", "CL-018"], [50, 50])}
ESK_PRESCRIBERS = {"SITE-03": ["CL-013", "CL-016"], "SITE-04": ["CL-017"]}
ESK_BLS = {"SITE-03": ["CL-031", "CL-032", "CL-033"], "SITE-04": ["CL-034", "CL-035"]}
ESK_INDUCTION = [0, 3, 7, 10, 14, 17, 21, 24]     # weeks 1-4 (days 0-27): Monday and Thursday
ESK_SLOTS = [(8 * 60, 10 * 60 + 30), (10 * 60 + 30, 13 * 60)]   # 2 h+ chair time: mornings and middays
ESK_NOTES = ["tolerated well", "transient dissociation, resolved", "nausea, resolved", "sedated at 40 min, MOAA/S 4",
             "BP rechecked at 60 min", "anxious before first device", "dizziness, resolved before discharge"]
ESK_BLANK_RATES = {
    "route": 0.003, "drug": 0.003, "cancelled": 0.0015, "setting_type": 0.003, "phase": 0.005,
    "session_number_in_course": 0.005, "dose_mg": 0.004, "devices_count": 0.005, "dose_start_time": 0.004,
    "monitoring_end_time": 0.006, "prescriber_onsite": 0.006, "escort_present": 0.005,
}
# Malformed esketamine rows, at fixed fractions of the esketamine sessions.
ESK_DEFECTS = [(0.36, "dose_mg", "unit typed into the number"),
               (0.71, "pmf_submitted_date", "no such date")]


@dataclass
class EskPatient:
    idx: int
    pid: str
    site: str
    inpatient: bool
    sex: str
    sbp_mean: float
    dbp_mean: float
    slot: tuple[int, int]
    top_dose: int                 # 56 or 84 after titration
    titrate_at: int               # session number from which the top dose is given
    course_start: dt.date         # day 0 of the course (may be before the export window)
    plan: list[tuple[dt.date, int, str]] = field(default_factory=list)   # (day, n in course, phase)
    consent: str = ""
    enrolled: dt.date | None = None
    starts_high: bool = False     # planted DOSE-04B: the first session is given 84 mg


def _esk_stream(weekly: bool) -> Iterator[tuple[int, str]]:
    """(day offset from course day 0, phase) of one esketamine course: twice weekly in weeks
    1-4, weekly in weeks 5-8, then weekly or every 2 weeks (label, §2.2)."""
    for off in ESK_INDUCTION:
        yield off, "induction"
    for k in range(4):
        yield 28 + 7 * k, "maintenance"
    off = 49
    while True:
        off += 7 if weekly else 14
        yield off, "maintenance"


def _esk_patients(rng: random.Random, plant: random.Random, n_sessions: int, n_patients: int,
                  first_number: int) -> list[EskPatient]:
    usable = WINDOW_DAYS - 7
    n_inpatient = round(n_patients / 12)
    inpatients = set(rng.sample(range(n_patients), n_inpatient))
    kinds, quotas, weekly, carried = [], [], [], []
    for i in range(n_patients):
        u = rng.random()
        weekly.append(rng.random() < 0.4)
        carried.append(False)
        if i in inpatients:
            kinds.append("inpatient")
            quotas.append(rng.randint(4, 8))
        elif u < 0.15:
            kinds.append("dropout")
            quotas.append(rng.randint(2, 7))
        elif u < 0.45:
            kinds.append("short")                      # stops after induction or weeks 5-8
            quotas.append(rng.choice([8, 8, 9, 10, 11, 12]))
        else:
            kinds.append("continuer")
            carried[i] = rng.random() < 0.35           # already in maintenance when the window opens
            quotas.append(13 + int(rng.expovariate(1 / 8)))

    def capacity(i: int) -> int:
        if kinds[i] != "continuer":
            return quotas[i]
        stream = _esk_stream(weekly[i])
        if carried[i]:
            return sum(1 for off, _ in itertools.islice(stream, 200) if 0 <= off - 70 <= usable)
        return sum(1 for off, _ in itertools.islice(stream, 200) if off <= usable)

    caps = [capacity(i) for i in range(n_patients)]
    quotas = [min(q, c) for q, c in zip(quotas, caps, strict=True)]
    continuers = [i for i in range(n_patients) if kinds[i] == "continuer"]
    n_sessions = round(n_sessions * 1.035)                   # holidays skipped below lose ~3.5%
    step = 0
    while sum(quotas) != n_sessions and continuers:       # scale the continuers to the target
        i = continuers[step % len(continuers)]
        if sum(quotas) < n_sessions and quotas[i] < caps[i]:
            quotas[i] += 1
        elif sum(quotas) > n_sessions and quotas[i] > 13:
            quotas[i] -= 1
        step += 1
        if step > 100_000:
            break
    patients = []
    for i in range(n_patients):
        sex = "F" if rng.random() < 0.62 else "M"
        hyper = rng.random() < 0.33
        sbp, dbp = (rng.gauss(136, 10), rng.gauss(84, 7)) if hyper else (rng.gauss(122, 9), rng.gauss(77, 6))
        site = "SITE-04" if kinds[i] == "inpatient" else "SITE-03"
        stream = list(itertools.islice(_esk_stream(weekly[i]), 400))
        q = quotas[i]
        if carried[i]:
            skip = next(k for k, (off, _) in enumerate(stream) if off >= 70)
            skip += rng.randint(0, 6)
            start = WINDOW_START - dt.timedelta(days=stream[skip][0] - rng.randint(0, 6))
        else:
            skip = 0
            span = stream[q - 1][0]
            start = WINDOW_START + dt.timedelta(days=rng.randint(0, max(0, usable - span)))
        start -= dt.timedelta(days=start.weekday())                      # day 0 is a Monday
        p = EskPatient(i, _id("P", first_number + i, 4), site, kinds[i] == "inpatient", sex, sbp, dbp,
                       rng.choice(ESK_SLOTS), 84 if rng.random() < 0.61 else 56, rng.randint(2, 4), start)
        offsets = [(off, phase, False) for off, phase in stream[:skip + q]]
        # Planted (SCHED-02, SCHED-02B): an extra visit squeezed into an induction week (a 3rd
        # session in the week) or 2-4 days after a maintenance session.
        extra = []
        for k in range(skip, skip + q):
            off, phase = stream[k]
            nxt = stream[k + 1][0] if k + 1 < skip + q else off + 99
            if phase == "induction" and off % 7 == 0 and plant.random() < 0.02:
                extra.append((off + 2, "induction", True))
            elif phase == "maintenance" and plant.random() < 0.01 and nxt - off > 5:
                extra.append((off + plant.randint(2, 4), "maintenance", True))
        offsets = sorted(offsets + extra)
        exported_from = skip + sum(1 for e in extra if e[0] < stream[skip][0]) if skip else 0
        n = 0
        for k, (off, phase, _extra) in enumerate(offsets):
            day = start + dt.timedelta(days=off)
            if day in HOLIDAYS:          # the centre is closed: that dose is skipped, not moved
                continue
            n += 1
            if k >= exported_from and WINDOW_START <= day <= WINDOW_END:
                p.plan.append((day, n, phase))
        p.consent = (start - dt.timedelta(days=rng.choice([0, 1, 3, 5, 7, 10]))).isoformat()
        if not p.inpatient:
            p.enrolled = start - dt.timedelta(days=rng.choice([0, 0, 1, 2, 3, 5, 7, 12]))
        elif rng.random() < 0.4:                  # some inpatients go on as outpatients: enrolled anyway
            p.enrolled = start + dt.timedelta(days=rng.randint(5, 20))
        patients.append(p)
    # Planted (REMS-01): one outpatient who starts inside the window is enrolled 2 days late.
    starters = [p for p in patients if not p.inpatient and p.plan and p.plan[0][1] == 1]
    if starters:
        late = plant.choice(starters)
        late.enrolled = late.plan[0][0] + dt.timedelta(days=2)
    # Planted (DOSE-04B): two courses (of the ones that start inside the window) start at 84 mg.
    for e in plant.sample([p for p in patients if p.plan and p.plan[0][1] == 1], 2):
        e.starts_high = True
    return patients


def _decision(patient: str, arrival: dt.datetime) -> bool:
    """Whether a pre-dose reading above 140/90 has the prescriber's documented decision: 96% do (a
    generator of its own per session, so adding it changed no other value of the samples)."""
    return random.Random(f"bp-decision:{patient}:{arrival.isoformat()}").random() >= 0.04


def _esk_row(rng: random.Random, p: EskPatient, day: dt.date, n: int, phase: str) -> Row:
    lo, hi = p.slot
    arrival = _local(day, lo + 15 * rng.randint(0, (hi - lo) // 15)) + dt.timedelta(
        minutes=rng.choice([-8, -4, 0, 0, 0, 3, 6, 10]))
    names, weights = ESK_ROSTER[p.site]
    clinician = rng.choices(names, weights)[0]
    role, cards = ESK_CLINICIANS[clinician]
    card = max((c for c in cards if c[0] <= day), default=cards[0])
    row: Row = {c: "" for c in COLUMNS}
    row.update({
        "site_id": p.site, "patient_id": p.pid, "course_id": f"C-{p.pid[2:]}-01",
        "session_number_in_course": str(n), "phase": phase,
        "session_start": _iso(arrival), "session_date": arrival.astimezone(TZ).date().isoformat(),
        "drug": "esketamine", "route": "IN", "setting_type": "inpatient" if p.inpatient else "outpatient",
        "cancelled": "false", "supervising_clinician_id": clinician, "supervising_role": role,
        "acls_expiry": card[1].isoformat(), "second_bls_staff_id": rng.choice(ESK_BLS[p.site]),
        "consent_signed_date": p.consent,
    })
    truth: dict[str, Any] = {"course": 1, "n": n, "arrival": arrival, "site": p.site, "esk": True}
    row["_t"] = truth
    if rng.random() < 0.02:                                  # cancelled: unwell, no driver, no-show
        row["cancelled"] = "true"
        row["notes"] = rng.choice(CANCEL_NOTES)
        return row
    sbp = round(p.sbp_mean + rng.gauss(0, 8))
    dbp = round(p.dbp_mean + rng.gauss(0, 6))
    bp_time = arrival + dt.timedelta(minutes=rng.randint(5, 15))
    dose_start = bp_time + dt.timedelta(minutes=rng.randint(8, 25))
    pre = "ok"
    u = rng.random()
    if u < 0.015:
        pre = "missing"                                      # planted VIT-01-IN: no pre-dose BP
    elif u < 0.02:
        bp_time = dose_start - dt.timedelta(minutes=rng.randint(35, 55))   # planted: stale
    # dose (DOSE-04, DOSE-04B) and devices (DOSE-04C)
    dose = 56 if n < p.titrate_at else p.top_dose
    if n == 1 and p.starts_high:
        dose = 84                                            # planted: course started at 84 mg
    u = rng.random()
    if u < 0.004:
        dose = 28                                            # planted: 28 mg (a non-US elderly start)
    elif u < 0.006:
        dose = 112
    devices = dose // 28
    if rng.random() < 0.012:
        devices += rng.choice([-1, 1])                       # planted: device count does not match
    dose_end = dose_start + dt.timedelta(minutes=5 * (max(devices, 1) - 1) + 1)
    # monitoring (OBS-01-IN): 120-150 min, median ~125; 2% ended early
    if rng.random() < 0.015:
        monitor = rng.randint(100, 118)
    else:
        monitor = max(120, round(rng.triangular(120, 150, 122)))
    monitoring_end = dose_start + dt.timedelta(minutes=monitor)
    discharge = monitoring_end + dt.timedelta(minutes=rng.randint(2, 15))
    # the ~40-minute BP (VIT-06): 5% not in the 30-50 min window
    u = rng.random()
    t40: int | None = rng.randint(36, 44)
    if u < 0.025:
        t40 = None                                           # not taken
    elif u < 0.04:
        t40 = rng.randint(55, 70)                            # taken late
    elif u < 0.05:
        t40 = rng.randint(20, 28)                            # taken early
    # REMS Patient Monitoring Form (REMS-02), outpatient only: 6% late, 1% never sent
    pmf = ""
    if not p.inpatient:
        u = rng.random()
        if u < 0.06:
            pmf = (day + dt.timedelta(days=rng.randint(8, 25))).isoformat()
        elif u >= 0.07:
            pmf = (day + dt.timedelta(days=rng.choice([0, 0, 1, 1, 1, 2, 2, 3, 4, 6]))).isoformat()
    onsite = "false" if rng.random() < 0.015 else "true"     # planted STAFF-01-IN
    row.update({
        "dose_mg": str(dose), "devices_count": str(devices),
        "predose_bp_time": "" if pre == "missing" else _iso(bp_time),
        "predose_sbp": "" if pre == "missing" else str(sbp),
        "predose_dbp": "" if pre == "missing" else str(dbp),
        "predose_bp_override": "true" if (sbp > 140 or dbp > 90) and _decision(p.pid, arrival) else "false",
        "dose_start_time": _iso(dose_start), "dose_end_time": _iso(dose_end),
        "spo2_monitored": "false" if rng.random() < 0.005 else "true",
        "monitoring_end_time": _iso(monitoring_end), "discharge_time": _iso(discharge),
        "escort_present": "false" if rng.random() < 0.01 else "true",
        "no_drive_instruction_given": "false" if rng.random() < 0.01 else "true",
        "prescriber_onsite": onsite, "pmf_submitted_date": pmf,
        "notes": rng.choice(ESK_NOTES) if rng.random() < 0.12 else "",
    })
    truth.update(bp_time=None if pre == "missing" else bp_time, sbp=sbp, dbp=dbp, dose_start=dose_start,
                 dose_end=dose_end, end=monitoring_end, discharge=discharge, t40=t40,
                 hyper=p.sbp_mean > 130)
    for col, rate in ESK_BLANK_RATES.items():
        if rng.random() < rate:
            row[col] = ""
    return row


def _esk_export(n_sessions: int, n_patients: int, seed: int,
                bad_rows: bool) -> tuple[list[EskPatient], list[Row]]:
    rng = random.Random(f"{seed}:esketamine")
    plant = random.Random(f"{seed}:esketamine:plant")
    patients = _esk_patients(rng, plant, n_sessions, n_patients, ESK_FIRST_PATIENT)
    rows = [_esk_row(rng, p, day, n, phase) for p in patients for day, n, phase in p.plan]
    rows.sort(key=lambda r: (r["_t"]["arrival"], r["patient_id"]))
    for number, row in enumerate(rows, start=1):
        row["session_id"] = _id("SPR", number, 5)
    if bad_rows and len(rows) >= 20:
        for fraction, column, desc in ESK_DEFECTS:
            k = int(fraction * len(rows))
            while rows[k]["cancelled"] != "false" or not rows[k][column]:
                k += 1
            if column == "dose_mg":
                rows[k]["dose_mg"] += " mg"
            else:
                rows[k]["pmf_submitted_date"] = rows[k]["session_date"][:5] + "04-31"
            rows[k]["_bad"] = f"{column} = {rows[k][column]!r} ({desc})"
    return patients, rows


def _merge_sessions(iv: Iterable[Row], esk: list[Row]) -> Iterator[Row]:
    """One export in arrival order; each part keeps its own order (the IV duplicate row stays where
    the IV export put it)."""
    return heapq.merge(iv, esk, key=lambda r: r["_t"]["arrival"])


# ----------------------------------------------------------------------------- vitals

VITAL_COLUMNS = {"vital_id": "string", "session_id": "string", "patient_id": "string", "measured_at": "datetime",
                 "dose_start_time": "datetime", "phase": "enum", "sbp_mmhg": "integer", "dbp_mmhg": "integer",
                 "hr_bpm": "integer", "spo2_pct": "integer"}
# (fraction of the file, what): malformed readings, each on the pre-dose reading of an IV session
VITAL_DEFECTS = [(0.22, "spo2_pct"), (0.58, "measured_at"), (0.81, "vital_id")]


def vitals(sessions: Iterable[Row], seed: int = SEED, bad_rows: bool = True) -> list[Row]:
    """Vital-sign readings of the sessions: pre-dose, during (IV ~20 min into the infusion;
    esketamine ~40 min after the first device), after, and at discharge. Each reading
    carries its session's dose start. Sessions' rows must carry the hidden ``_t`` key."""
    rng = random.Random(f"{seed}:vitals")
    out: list[Row] = []
    seen: set[str] = set()
    infusions: list[tuple[Row, dt.datetime, dt.datetime]] = []   # (its ~20-minute reading, dose start, end)
    for row in sessions:
        t = row.get("_t")
        sid = row["session_id"]
        if not isinstance(t, dict) or sid in seen:
            continue
        seen.add(sid)
        hr0 = rng.gauss(76, 9)
        dose_start = t.get("dose_start")
        readings: list[tuple[dt.datetime, str, float, float]] = []
        if t.get("bp_time") is not None:
            readings.append((t["bp_time"], "pre", 0, 0))
        if dose_start is None and not t.get("held"):
            continue                                           # cancelled before any reading
        if dose_start is not None:
            big = 1 if rng.random() < (0.05 if t.get("esk") else 0.02) else 0
            rise_s = rng.gauss(10 if t.get("esk") else 7, 8) + 5 * bool(t.get("hyper")) + 35 * big
            rise_d = rng.gauss(6, 6) + 20 * big
            if t.get("esk"):
                if t.get("t40") is not None:
                    readings.append((dose_start + dt.timedelta(minutes=t["t40"]), "intra", rise_s, rise_d))
                readings.append((dose_start + dt.timedelta(minutes=rng.randint(85, 100)), "post",
                                 rise_s * 0.4, rise_d * 0.4))
            else:
                readings.append((dose_start + dt.timedelta(minutes=rng.randint(15, 25)), "intra", rise_s, rise_d))
                readings.append((t["dose_end"] + dt.timedelta(minutes=rng.randint(5, 15)), "post",
                                 rise_s * 0.4, rise_d * 0.4))
            if rng.random() > 0.03:                            # discharge vitals not charted: 3%
                readings.append((t["end"] - dt.timedelta(minutes=rng.randint(0, 8)), "discharge",
                                 rng.gauss(1, 4), rng.gauss(0, 3)))
        readings.sort(key=lambda r: r[0])
        for at, phase, ds, dd in readings:
            vit = {
                "vital_id": "", "session_id": sid, "patient_id": row["patient_id"], "measured_at": _iso(at),
                "dose_start_time": _iso(dose_start) if dose_start is not None else "", "phase": phase,
                "sbp_mmhg": str(round(t["sbp"] + ds + (rng.gauss(0, 4) if phase != "pre" else 0))),
                "dbp_mmhg": str(round(t["dbp"] + dd + (rng.gauss(0, 3) if phase != "pre" else 0))),
                "hr_bpm": str(round(hr0 + (rng.gauss(2, 6) if phase != "pre" else 0))),
                "spo2_pct": str(min(100, max(90, round(rng.gauss(97.6, 1.1))))),
                "_pre_iv": phase == "pre" and not t.get("esk") and not t.get("held"),
            }
            if rng.random() < 0.003:
                vit["sbp_mmhg"] = vit["dbp_mmhg"] = ""              # cuff error
            for col in ("hr_bpm", "spo2_pct"):
                if rng.random() < (0.006 if phase == "pre" else 0.003):
                    vit[col] = ""
            out.append(vit)
            if phase == "intra" and not t.get("esk"):
                infusions.append((vit, dose_start, t["dose_end"]))
    width = max(6, len(str(len(out) + 1)))
    for number, vit in enumerate(out, start=1):
        vit["vital_id"] = _id("V", number, width)
    if bad_rows and len(out) >= 100:
        for fraction, column in VITAL_DEFECTS:
            k = int(fraction * len(out))
            while not out[k]["_pre_iv"] or not out[k]["spo2_pct"] or not out[k]["hr_bpm"] or not out[k]["sbp_mmhg"]:
                k += 1
            vit = out[k]
            if column == "spo2_pct":
                vit["spo2_pct"] += "%"
                vit["_bad"] = f"spo2_pct = {vit['spo2_pct']!r} (percent sign typed in): not an integer"
            elif column == "measured_at":
                local = dt.datetime.fromisoformat(vit["measured_at"])
                vit["measured_at"] = local.strftime("%m/%d/%Y %H:%M")
                vit["_bad"] = f"measured_at = {vit['measured_at']!r} (US date format): not ISO 8601"
            else:
                dup = dict(vit, _bad=f"duplicate vital_id {vit['vital_id']} (reading exported twice)")
                out.insert(k + 1, dup)
    series = _infusion_series(infusions, seed)
    for number, vit in enumerate(series, start=1 + max((int(v["vital_id"][2:]) for v in out), default=0)):
        vit["vital_id"] = _id("V", number, width)
    return out + series


# IV infusions are charted as a series (domain 7.3: q10 min in most sessions, q15 in some, an
# irregular gap in a few). The readings beside each infusion's ~20-minute one are written after every
# other reading, from a generator of their own, so no earlier row, id or cited line moves.
SERIES_CADENCE = [(10, 0.80), (15, 0.17), (0, 0.03)]     # minutes between readings; 0: a gap of 20-28 min
SPO2_DIP_RATE = 0.006                                     # an intra reading below 92% (domain 7.3)


def _infusion_series(infusions: list[tuple[Row, dt.datetime, dt.datetime]], seed: int) -> list[Row]:
    """The other readings of each IV infusion's series: every gap from the dose start to the last
    reading is at most 14 minutes, except in the irregular sessions, which have one gap of 20-28."""
    rng = random.Random(f"{seed}:infusion-series")
    out: list[Row] = []
    for anchor, start, end in infusions:
        cadence = rng.choices([c for c, _ in SERIES_CADENCE], [w for _, w in SERIES_CADENCE])[0]
        anchor_at = dt.datetime.fromisoformat(anchor["measured_at"])
        length = (end - start).total_seconds() / 60
        step = cadence or 10
        marks = [step * k + rng.randint(-2, 1) for k in range(1, int(length // step) + 1)]
        marks = [m for m in marks if 0 < m < length and abs(m - (anchor_at - start).total_seconds() / 60) >= 5]
        minutes = sorted({*marks, (anchor_at - start).total_seconds() / 60})
        points = [0.0, *minutes]
        k = 1
        while k < len(points):                     # fill any gap over 14 minutes with a reading between
            if points[k] - points[k - 1] > 14:
                points.insert(k, float(points[k - 1] + rng.randint(8, 12)))
            k += 1
        extra = [m for m in points[1:] if m not in minutes or m in marks]
        if cadence == 0 and len(extra) >= 2:       # irregular: one reading not taken, a gap of 20-28
            drop = rng.randrange(len(extra))
            before = max([0.0, *(m for m in points[1:] if m < extra[drop])])
            later = [m for m in points[1:] if m > extra[drop]]
            if later and 20 <= later[0] - before <= 28:
                extra.pop(drop)
        dip = rng.random() < SPO2_DIP_RATE
        for index, minute in enumerate(extra):
            at = start + dt.timedelta(minutes=minute)
            spo2 = min(100, max(92, round(rng.gauss(97.6, 1.1))))
            if dip and index == len(extra) // 2:
                spo2 = rng.randint(86, 91)
            out.append({
                "vital_id": "", "session_id": anchor["session_id"], "patient_id": anchor["patient_id"],
                "measured_at": _iso(at), "dose_start_time": anchor["dose_start_time"], "phase": "intra",
                "sbp_mmhg": str(int(anchor["sbp_mmhg"]) + round(rng.gauss(0, 4))) if anchor["sbp_mmhg"] else "",
                "dbp_mmhg": str(int(anchor["dbp_mmhg"]) + round(rng.gauss(0, 3))) if anchor["dbp_mmhg"] else "",
                "hr_bpm": str(int(anchor["hr_bpm"]) + round(rng.gauss(0, 3))) if anchor["hr_bpm"] else "",
                "spo2_pct": str(spo2),
            })
    return out


INTERVENTION_COLUMNS = {"intervention_id": "string", "session_id": "string", "patient_id": "string",
                        "performed_at": "datetime", "kind": "enum", "reason": "enum", "performed_by": "string"}
HYPERTENSION_ACTIONS = [("repeat_bp", 45), ("physician_notified", 25), ("infusion_paused", 20), ("medication", 10)]
HYPOXIA_ACTIONS = [("stimulation", 55), ("oxygen", 35), ("infusion_paused", 10)]


def _whole(text: str) -> int | None:
    """A cell's whole number, or None when it is empty or not one."""
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def _alarms(vit: Row) -> list[tuple[str, str]]:
    """What a readable reading during or after the dose calls for, in order: ("hypertension", grade)
    at or above 180/110 (moderate from 200/120), ("hypoxia", grade) below 92% SpO2 (moderate below
    88%); none for a planted bad row or another phase."""
    if vit.get("_bad") or vit["phase"] not in ("intra", "post"):
        return []
    sbp, dbp, spo2 = _whole(vit["sbp_mmhg"]), _whole(vit["dbp_mmhg"]), _whole(vit["spo2_pct"])
    alarms = []
    if (sbp is not None and sbp >= 180) or (dbp is not None and dbp >= 110):
        alarms.append(("hypertension", "moderate" if (sbp or 0) >= 200 or (dbp or 0) >= 120 else "mild"))
    if spo2 is not None and spo2 < 92:
        alarms.append(("hypoxia", "moderate" if spo2 < 88 else "mild"))
    return alarms


def interventions(vital_rows: list[Row], sessions: list[Row], seed: int = SEED, bad_rows: bool = True) -> list[Row]:
    """What the nurse did about a reading during or after a dose at or above 180/110, or with SpO2
    below 92%: within 1-12 minutes (hypertension) or 0-4 minutes (hypoxia), by the session's
    supervising clinician; 10% of the responses to hypertension and 15% to hypoxia not charted."""
    rng = random.Random(f"{seed}:interventions")
    staff = {row["session_id"]: row.get("supervising_clinician_id", "") for row in sessions}
    rows: list[Row] = []

    responses = {"hypertension": (HYPERTENSION_ACTIONS, (1, 12), 0.10), "hypoxia": (HYPOXIA_ACTIONS, (0, 4), 0.15)}
    for vit in vital_rows:
        alarms = _alarms(vit)
        if not alarms:
            continue
        at = dt.datetime.fromisoformat(vit["measured_at"])
        for reason, _grade in alarms:
            actions, (low, high), missed = responses[reason]
            if rng.random() < missed:
                continue
            kind = rng.choices([a for a, _ in actions], [w for _, w in actions])[0]
            rows.append({"intervention_id": "", "session_id": vit["session_id"], "patient_id": vit["patient_id"],
                         "performed_at": _iso(at + dt.timedelta(minutes=rng.randint(low, high))), "kind": kind,
                         "reason": reason, "performed_by": staff.get(vit["session_id"], "")})
    rows.sort(key=lambda r: (r["performed_at"], r["session_id"]))
    for index, row in enumerate(rows, start=1):
        row["intervention_id"] = _id("INT", index, 4)
    if bad_rows and len(rows) > 10:
        k = len(rows) // 3                    # a response charted with a free-text action: not one of the kinds
        rows[k]["kind"] = "BP rechecked"
        rows[k]["_bad"] = "kind = 'BP rechecked': not one of the declared values"
    return rows


ADVERSE_EVENT_COLUMNS = {"ae_id": "string", "session_id": "string", "patient_id": "string", "drug": "enum",
                         "ae_type": "enum", "onset_at": "datetime", "severity": "enum", "serious": "boolean",
                         "action": "enum", "outcome": "enum", "reported_to": "enum", "report_ref": "string",
                         "reported_at": "datetime", "recorded_by": "string"}
AE_ACTIONS = {"infusion_paused": "paused", "infusion_stopped": "stopped", "medication": "medication",
              "oxygen": "oxygen"}
AE_NOTES = {"mild nausea, ondansetron 4 mg IV": ("nausea", "medication"), "nausea, resolved": ("nausea", "none"),
            "sedated at 40 min, MOAA/S 4": ("sedation_excess", "none")}
# Serious events planted on dosed sessions (AE-02, AE-02-IN): route, event, action, outcome, marked serious,
# where reported, days from onset to the report (None: never reported).
SERIOUS_PLANTS = [("IV", "hypertension", "stopped", "resolved", True, "fda_medwatch", 2),
                  ("IV", "resp_depression", "ed_transfer", "transferred", True, "internal", 1),
                  ("IV", "loss_of_consciousness", "ed_transfer", "transferred", False, "none", None),
                  ("IV", "loss_of_consciousness", "oxygen", "resolved", True, "internal", 9),
                  ("IN", "loss_of_consciousness", "oxygen", "resolved", True, "rems", 3),
                  ("IN", "resp_depression", "oxygen", "resolved", True, "internal", 2),
                  ("IN", "loss_of_consciousness", "none", "resolved", True, "rems", 11)]


def adverse_events(vital_rows: list[Row], sessions: list[Row], actions: list[Row], seed: int = SEED,
                   bad_rows: bool = True) -> list[Row]:
    """Structured adverse-event records (AE-01, AE-02 and their esketamine twins): one per session and
    cause for a reading during or after the dose at or above 180/110 (hypertension) or below 92% SpO2
    (desaturation; moderate below 88%), 15% of them never recorded; the nausea and
    esketamine sedation that session notes mention; and seven planted serious events (SERIOUS_PLANTS):
    reported in time, an ED transfer recorded as not serious and never reported, one reported nine
    days late, an esketamine one reported only internally and one to the REMS eleven days late. Each
    names what was done (from the session's interventions), the outcome, and where it was reported.
    A generator of its own: no other file changes."""
    rng = random.Random(f"{seed}:adverse-events")
    by_id = {row["session_id"]: row for row in sessions if not row.get("_bad")}
    done: dict[tuple[str, str], str] = {}
    for act in actions:
        if act.get("_bad") or act["kind"] not in AE_ACTIONS:
            continue
        done.setdefault((act["session_id"], act["reason"]), AE_ACTIONS[act["kind"]])
    rows: list[Row] = []

    def add(session: Row, ae_type: str, onset: dt.datetime, severity: str, action: str, outcome: str = "resolved",
            serious: bool = False, reported_to: str = "internal", lag_days: float | None = 0.0) -> None:
        reported = onset + dt.timedelta(days=lag_days, hours=rng.randint(1, 6)) if lag_days is not None else None
        rows.append({"ae_id": "", "session_id": session["session_id"], "patient_id": session["patient_id"],
                     "drug": session["drug"], "ae_type": ae_type, "onset_at": _iso(onset), "severity": severity,
                     "serious": "true" if serious else "false", "action": action, "outcome": outcome,
                     "reported_to": reported_to, "report_ref": "", "reported_at": _iso(reported) if reported else "",
                     "recorded_by": session.get("supervising_clinician_id", "")})

    first: dict[tuple[str, str], tuple[dt.datetime, str]] = {}
    for vit in vital_rows:
        alarms = _alarms(vit) if vit["session_id"] in by_id else []
        for reason, grade in alarms:
            first.setdefault((vit["session_id"], reason), (dt.datetime.fromisoformat(vit["measured_at"]), grade))
    for (sid, reason), (at, grade) in sorted(first.items(), key=lambda item: (item[1][0], item[0])):
        if rng.random() < 0.15:
            continue
        ae_type = "hypertension" if reason == "hypertension" else "desaturation"
        add(by_id[sid], ae_type, at + dt.timedelta(minutes=rng.randint(0, 2)), grade, done.get((sid, reason), "none"))
    dosed = [row for row in sessions if not row.get("_bad") and row["cancelled"] == "false" and row["dose_start_time"]
             and row["route"] in ("IV", "IN")]
    for row in dosed:
        note = AE_NOTES.get(row.get("notes", ""))
        if note is not None:
            start = dt.datetime.fromisoformat(row["dose_start_time"])
            add(row, note[0], start + dt.timedelta(minutes=rng.randint(15, 45)), "mild", note[1])
    for route, ae_type, action, outcome, serious, reported_to, lag in SERIOUS_PLANTS:
        taken = {r["session_id"] for r in rows}
        pool = [row for row in dosed if row["route"] == route and row["session_id"] not in taken]
        if not pool:
            continue
        row = rng.choice(pool)
        start = dt.datetime.fromisoformat(row["dose_start_time"])
        add(row, ae_type, start + dt.timedelta(minutes=rng.randint(20, 50)), "severe", action, outcome, serious,
            reported_to, lag)
    rows.sort(key=lambda r: (r["onset_at"], r["session_id"]))
    refs = {"internal": "IR", "fda_medwatch": "MW", "rems": "REMS"}
    for index, row in enumerate(rows, start=1):
        row["ae_id"] = _id("AE", index, 4)
        if row["reported_to"] in refs:
            row["report_ref"] = f"{refs[row['reported_to']]}-{row['onset_at'][:4]}-{index:04d}"
    if bad_rows and len(rows) > 10:
        k = len(rows) // 2                    # an onset keyed as a date that does not exist
        rows[k]["_bad"] = f"onset_at = '{rows[k]['onset_at'][:5]}02-30{rows[k]['onset_at'][10:]}': no such day"
        rows[k]["onset_at"] = rows[k]["onset_at"][:5] + "02-30" + rows[k]["onset_at"][10:]
    return rows


# ----------------------------------------------------------------------------- screenings and assessments

SCREENING_COLUMNS = {"screening_id": "string", "patient_id": "string", "screened_at": "datetime",
                     "instrument": "enum", "total_score": "integer", "sex": "enum", "administered_by": "string",
                     "reviewed_by": "string", "reviewed_at": "datetime"}
ASSESSMENT_COLUMNS = {"assessment_id": "string", "patient_id": "string", "session_id": "string",
                      "administered_at": "datetime", "instrument": "enum", "total_score": "integer",
                      "item9_score": "integer", "risk_level": "enum"}
ENROLLMENT_COLUMNS = {"enrollment_id": "string", "patient_id": "string", "site_id": "extra",
                      "enrolled_date": "date", "enrolled_by": "string"}
REVIEWERS = {"SITE-01": ["CL-001", "CL-002"], "SITE-02": ["CL-008", "CL-012"],
             "SITE-03": ["CL-013", "CL-016"], "SITE-04": ["CL-017"]}
INTAKE_STAFF = {"SITE-01": ["CL-021", "CL-022", "CL-023"], "SITE-02": ["CL-026", "CL-027"],
                "SITE-03": ["CL-031", "CL-032"], "SITE-04": ["CL-034"]}


@dataclass
class Course:
    patient: str
    sex: str
    site: str
    anchor: dt.datetime        # arrival at the course's first session (or 09:00 on its start day)
    in_export: bool            # its first session is in the session export (so ELIG-02/03 judge it)
    esk: bool


def _courses(session_rows: list[Row], iv_patients: list[Patient], esk_patients: list[EskPatient]) -> list[Course]:
    first: dict[tuple[str, int], dt.datetime] = {}
    for row in session_rows:
        t = row.get("_t")
        if isinstance(t, dict) and t["n"] == 1:
            first.setdefault((row["patient_id"], t["course"]), t["arrival"])
    courses = []
    for p in iv_patients:
        for course, start in sorted(p.course_start.items()):
            anchor = first.get((p.pid, course))
            courses.append(Course(p.pid, p.sex, p.site, anchor or _local(start, 9 * 60), anchor is not None, False))
    for e in esk_patients:
        if not e.plan:
            continue
        anchor = first.get((e.pid, 1))
        courses.append(Course(e.pid, e.sex, e.site, anchor or _local(e.course_start, 9 * 60), anchor is not None, True))
    courses.sort(key=lambda c: (c.anchor, c.patient))
    return courses


def _weekday_at(rng: random.Random, moment: dt.datetime, back_days: int, lo: int = 10 * 60,
                hi: int = 15 * 60 + 30) -> dt.datetime:
    """A weekday office time about ``back_days`` days before ``moment``."""
    day = moment.astimezone(TZ).date() - dt.timedelta(days=back_days)
    while day.weekday() >= 5 or day in HOLIDAYS:
        day -= dt.timedelta(days=1)
    return _local(day, lo + 5 * rng.randint(0, (hi - lo) // 5))


def _score(rng: random.Random, instrument: str, sex: str) -> int:
    u = rng.random()
    if instrument == "DAST10":           # >= 3 in ~6.5% (§7.1)
        if u < 0.70:
            return 0
        return rng.randint(1, 2) if u < 0.935 else rng.randint(3, 5) if u < 0.985 else rng.randint(6, 8)
    if instrument == "AUDITC":           # positive (>= 4 men, >= 3 women) in ~17%
        cut = 4 if sex == "M" else 3
        return rng.randint(cut, min(12, cut + 5)) if u < 0.17 else rng.randint(0, cut - 1)
    return 0 if u < 0.78 else 1 if u < 0.90 else rng.randint(2, 4)   # CAGE-AID


def _positive(instrument: str, score: int, sex: str) -> bool:
    if instrument == "DAST10":
        return score >= 3
    if instrument == "CAGEAID":
        return score >= 1
    return score >= 4 or (score == 3 and sex != "M")


def screenings_and_assessments(session_rows: list[Row], iv_patients: list[Patient],
                               esk_patients: list[EskPatient], seed: int = SEED,
                               bad_rows: bool = True) -> tuple[list[Row], list[Row]]:
    """SUD screens and rating scales: an intake consult 2-28 days before each course's first
    session (DAST-10 + AUDIT-C or CAGE-AID, a baseline depression scale, a C-SSRS screen), and
    PHQ-9s at later sessions. Planted gaps are described in samples/README.md."""
    rng = random.Random(f"{seed}:screenings")
    plant = random.Random(f"{seed}:screenings:plant")
    courses = _courses(session_rows, iv_patients, esk_patients)
    # Course-level gaps are planted as exact counts among the IV courses whose first infusion is in
    # the export (the ones ELIG-02/03 judge): SUD screens 3 none, 3 only older than 90 days, 2 with
    # the AUDIT-C alone; baseline scales 3 none, 3 only older than 30 days.
    judged = [k for k, c in enumerate(courses) if c.in_export and not c.esk]
    sud_gap: dict[int, str] = {}
    base_gap: dict[int, str] = {}
    if len(judged) >= 40:
        for k, what in zip(plant.sample(judged, 8), ["none"] * 3 + ["stale"] * 3 + ["partial"] * 2, strict=True):
            sud_gap[k] = what
        for k, what in zip(plant.sample(judged, 6), ["none"] * 3 + ["stale"] * 3, strict=True):
            base_gap[k] = what
    screens: list[Row] = []
    scales: list[Row] = []
    for number, c in enumerate(courses):
        consult = _weekday_at(rng, c.anchor, rng.randint(2, 28))
        sex = c.sex if rng.random() > 0.01 else ""
        staff = rng.choice(INTAKE_STAFF[c.site])
        # -- SUD screens (ELIG-03): 80% DAST-10 + AUDIT-C, 20% CAGE-AID
        gap = sud_gap.get(number)
        when = consult
        sets = ["DAST10", "AUDITC"] if rng.random() < 0.8 else ["CAGEAID"]
        if gap == "none":
            sets = []
        elif gap == "stale":
            when = _weekday_at(rng, c.anchor, rng.randint(95, 150))
        elif gap == "partial":
            sets = ["AUDITC"]
        for k, instrument in enumerate(sets):
            at = when + dt.timedelta(minutes=3 * k + rng.randint(0, 2))
            score = _score(rng, instrument, c.sex)
            reviewer, reviewed = "", ""
            if _positive(instrument, score, c.sex):
                v = rng.random()                              # ELIG-03B: 14% never, 8% late
                if v < 0.08:
                    reviewer = rng.choice(REVIEWERS[c.site])
                    reviewed = _iso(at + dt.timedelta(days=rng.randint(8, 30), hours=rng.randint(0, 6)))
                elif v >= 0.22:
                    reviewer = rng.choice(REVIEWERS[c.site])
                    reviewed = _iso(at + dt.timedelta(minutes=rng.randint(30, 26 * 60)))
            elif rng.random() < 0.3:
                reviewer = rng.choice(REVIEWERS[c.site])
                reviewed = _iso(at + dt.timedelta(minutes=rng.randint(30, 300)))
            screens.append({"screening_id": "", "patient_id": c.patient, "screened_at": _iso(at),
                            "instrument": instrument, "total_score": str(score), "sex": sex,
                            "administered_by": staff, "reviewed_by": reviewer, "reviewed_at": reviewed,
                            "_first": c.in_export and not c.esk,
                            "_plain": c.in_export and not c.esk and gap is None})
        # -- baseline depression scale (ELIG-02)
        gap = base_gap.get(number)
        if gap != "none":
            when = _weekday_at(rng, c.anchor, rng.randint(35, 60)) if gap == "stale" else consult
            if gap is None and rng.random() < 0.15:              # filled in online the morning before arrival
                when = c.anchor - dt.timedelta(minutes=rng.randint(40, 180))
            instrument = rng.choices(["PHQ9", "MADRS", "QIDS_SR16"], [85, 10, 5])[0]
            score = {"PHQ9": lambda: min(27, max(10, round(rng.gauss(18.6, 4)))),
                     "MADRS": lambda: min(50, max(20, round(rng.gauss(32, 6)))),
                     "QIDS_SR16": lambda: min(27, max(8, round(rng.gauss(16, 4))))}[instrument]()
            item9 = str(rng.choices([0, 1, 2, 3], [70, 20, 7, 3])[0]) if instrument == "PHQ9" else ""
            scales.append({"assessment_id": "", "patient_id": c.patient, "session_id": "",
                           "administered_at": _iso(when + dt.timedelta(minutes=10)), "instrument": instrument,
                           "total_score": str(score), "item9_score": item9,
                           "risk_level": "", "_baseline": c.in_export and not c.esk and gap is None})
        risk = rng.choices(["none", "low", "moderate", "high"], [60, 22, 13, 5])[0]
        scales.append({"assessment_id": "", "patient_id": c.patient, "session_id": "",
                       "administered_at": _iso(consult + dt.timedelta(minutes=15)), "instrument": "CSSRS_SCREEN",
                       "total_score": "", "item9_score": "", "risk_level": risk})
    # follow-up PHQ-9s, taken after check-in: every 3rd IV infusion, esketamine sessions 4, 8, 12, ...
    for row in session_rows:
        t = row.get("_t")
        if not isinstance(t, dict) or row.get("_bad") or t.get("dose_start") is None:
            continue
        if (t["n"] % 4 == 0) if t.get("esk") else (t["n"] % 3 == 0):
            at = t["arrival"] + dt.timedelta(minutes=rng.randint(3, 10))
            scales.append({"assessment_id": "", "patient_id": row["patient_id"], "session_id": row["session_id"],
                           "administered_at": _iso(at), "instrument": "PHQ9",
                           "total_score": str(min(27, max(0, round(rng.gauss(11, 5))))),
                           "item9_score": str(rng.choices([0, 1, 2], [80, 15, 5])[0]), "risk_level": ""})
    screens.sort(key=lambda r: (dt.datetime.fromisoformat(r["screened_at"]), r["patient_id"]))
    scales.sort(key=lambda r: (dt.datetime.fromisoformat(r["administered_at"]), r["patient_id"], r["instrument"]))
    for number, r in enumerate(screens, start=1):
        r["screening_id"] = _id("SCR", number, 5)
    for number, r in enumerate(scales, start=1):
        r["assessment_id"] = _id("A", number, 6)
    if bad_rows and len(screens) >= 50 and len(scales) >= 50:
        # a DAST-10 of a course judged by ELIG-03, with its score typed as text: rejected, so the
        # course has no DAST-10 in the audit's eyes
        k = int(0.3 * len(screens))
        while not (screens[k]["_plain"] and screens[k]["instrument"] == "DAST10"):
            k += 1
        band = {"0": "none", "1": "low", "2": "low"}.get(screens[k]["total_score"], "moderate")
        screens[k]["total_score"] += f" ({band})"
        screens[k]["_bad"] = f"total_score = {screens[k]['total_score']!r}: not an integer"
        # a screen no ELIG-03 course needs: rejected, no other effect (the first such from 65% of the
        # file, else from its start: a small export may have none after 65%)
        k = next((i for i in [*range(int(0.65 * len(screens)), len(screens)), *range(len(screens))]
                  if not screens[i]["_first"]), None)
        if k is not None:
            screens[k]["screened_at"] = screens[k]["screened_at"][:5] + "02-30" + screens[k]["screened_at"][10:]
            screens[k]["_bad"] = f"screened_at = {screens[k]['screened_at']!r}: no such date"
        k = int(0.9 * len(screens))
        screens.insert(k + 1, dict(screens[k], _bad=f"duplicate screening_id {screens[k]['screening_id']}"))
        k = int(0.4 * len(scales))
        while not (scales[k].get("_baseline") and scales[k]["instrument"] == "PHQ9" and scales[k]["total_score"]):
            k += 1
        scales[k]["total_score"] = "n/a"
        scales[k]["_bad"] = "total_score = 'n/a': not an integer (a baseline PHQ-9)"
        k = int(0.75 * len(scales))
        scales.insert(k + 1, dict(scales[k], _bad=f"duplicate assessment_id {scales[k]['assessment_id']}"))
    screens += _rescreens(session_rows, screens, courses, sud_gap, seed)
    return screens, scales


def _rescreens(session_rows: list[Row], screens: list[Row], courses: list[Course], sud_gap: dict[int, str],
               seed: int) -> list[Row]:
    """Substance-use re-screens in IV maintenance (ELIG-03M): before a maintenance infusion more than
    170 days after the patient's last screen, a DAST-10 + AUDIT-C (or CAGE-AID) 1-7 days before it,
    every positive one reviewed the same day; 4% of them planted as missed. Appended after the other
    rows with the next ids, from a generator of their own, so no other row or line moves. None falls
    in the 90 days before a course whose screening gap ELIG-03 plants."""
    rng = random.Random(f"{seed}:rescreens")
    last: dict[str, dt.datetime] = {}
    sex: dict[str, str] = {}
    for row in screens:
        if row.get("_bad"):
            continue
        at = dt.datetime.fromisoformat(row["screened_at"])
        last[row["patient_id"]] = max(last.get(row["patient_id"], at), at)
        sex[row["patient_id"]] = row["sex"]
    planted = {}
    for number in sud_gap:
        planted.setdefault(courses[number].patient, []).append(courses[number].anchor)
    site = {c.patient: c.site for c in courses}
    maintenance = sorted((row for row in session_rows
                          if row.get("route") == "IV" and row.get("phase") == "maintenance"
                          and row.get("cancelled") == "false" and not row.get("_bad")
                          and isinstance(row.get("_t"), dict)),
                         key=lambda row: (row["_t"]["arrival"], row["patient_id"]))
    added: list[Row] = []
    for row in maintenance:
        patient, arrival = row["patient_id"], row["_t"]["arrival"]
        if patient not in last or (arrival - last[patient]).days < 170:
            continue
        when = _weekday_at(rng, arrival, rng.randint(1, 7))
        if rng.random() < 0.04 or any(dt.timedelta(0) <= anchor - when <= dt.timedelta(days=91)
                                      for anchor in planted.get(patient, ())):
            last[patient] = arrival          # missed: the course goes on without it until the next one
            continue
        sets = ["DAST10", "AUDITC"] if rng.random() < 0.8 else ["CAGEAID"]
        for k, instrument in enumerate(sets):
            at = when + dt.timedelta(minutes=3 * k + rng.randint(0, 2))
            score = _score(rng, instrument, sex.get(patient, ""))
            reviewer, reviewed = "", ""
            if _positive(instrument, score, sex.get(patient, "")):
                reviewer = rng.choice(REVIEWERS[site.get(patient, "SITE-01")])
                reviewed = _iso(at + dt.timedelta(minutes=rng.randint(30, 300)))
            added.append({"screening_id": "", "patient_id": patient, "screened_at": _iso(at),
                          "instrument": instrument, "total_score": str(score), "sex": sex.get(patient, ""),
                          "administered_by": rng.choice(INTAKE_STAFF[site.get(patient, "SITE-01")]),
                          "reviewed_by": reviewer, "reviewed_at": reviewed, "_first": False, "_plain": False})
        last[patient] = when
    first = 1 + sum(1 for row in screens if not str(row.get("_bad", "")).startswith("duplicate"))
    for number, row in enumerate(added, start=first):
        row["screening_id"] = _id("SCR", number, 5)
    return added


def enrollments(esk_patients: list[EskPatient], bad_rows: bool = True) -> list[Row]:
    """The REMS patient enrollment list (every enrolled patient, whenever enrolled)."""
    rows: list[Row] = []
    for e in sorted((e for e in esk_patients if e.enrolled is not None), key=lambda e: (e.enrolled, e.pid)):
        rows.append({"enrollment_id": "", "patient_id": e.pid, "site_id": e.site,
                     "enrolled_date": e.enrolled.isoformat() if e.enrolled else "",
                     "enrolled_by": ESK_PRESCRIBERS[e.site][e.idx % len(ESK_PRESCRIBERS[e.site])],
                     "_inpatient": e.inpatient})
    for number, r in enumerate(rows, start=1):
        r["enrollment_id"] = _id("ENR", number, 4)
    if bad_rows and len(rows) >= 10:
        inpatient = [k for k, r in enumerate(rows) if r["_inpatient"]]
        if inpatient:                       # an inpatient's enrollment (not required) with a bad date
            k = inpatient[0]
            rows[k]["enrolled_date"] = rows[k]["enrolled_date"].replace("-", "/")
            rows[k]["_bad"] = f"enrolled_date = {rows[k]['enrolled_date']!r}: not an ISO date"
        k = len(rows) // 2
        rows.insert(k + 1, dict(rows[k], _bad=f"duplicate enrollment_id {rows[k]['enrollment_id']}"))
    return rows


CREDENTIAL_COLUMNS = {"credential_id": "string", "staff_id": "string", "site_id": "extra", "role": "extra",
                      "kind": "enum", "issued_on": "date", "expires_on": "date", "verified_on": "date"}
# Professional licences (2-year renewal cycles; the state board's dates), as (issued, expires). Each
# renewal starts the day after the expiry, except CL-011's, renewed 16 days late: the sessions CL-011
# supervised in the lapse (2026-04-01..04-16) fail STAFF-05.
LICENCES: dict[str, list[tuple[dt.date, dt.date]]] = {
    "CL-001": [(dt.date(2024, 7, 1), dt.date(2026, 6, 30)), (dt.date(2026, 7, 1), dt.date(2028, 6, 30))],
    "CL-002": [(dt.date(2025, 3, 1), dt.date(2027, 2, 28))],
    "CL-003": [(dt.date(2024, 12, 1), dt.date(2026, 11, 30))],
    "CL-004": [(dt.date(2024, 9, 1), dt.date(2026, 8, 31)), (dt.date(2026, 9, 1), dt.date(2028, 8, 31))],
    "CL-005": [(dt.date(2025, 9, 1), dt.date(2027, 8, 31))],
    "CL-006": [(dt.date(2024, 5, 1), dt.date(2026, 4, 30)), (dt.date(2026, 5, 1), dt.date(2028, 4, 30))],
    "CL-007": [(dt.date(2025, 1, 1), dt.date(2026, 12, 31))],
    "CL-008": [(dt.date(2025, 2, 1), dt.date(2027, 1, 31))],
    "CL-009": [(dt.date(2025, 4, 1), dt.date(2027, 3, 31))],
    "CL-010": [(dt.date(2024, 11, 1), dt.date(2026, 10, 31))],
    "CL-011": [(dt.date(2024, 4, 1), dt.date(2026, 3, 31)), (dt.date(2026, 4, 17), dt.date(2028, 3, 31))],
    "CL-012": [(dt.date(2025, 1, 1), dt.date(2026, 12, 31))],
    "CL-013": [(dt.date(2025, 4, 1), dt.date(2027, 3, 31))],
    "CL-014": [(dt.date(2024, 10, 1), dt.date(2026, 9, 30))],
    "CL-015": [(dt.date(2025, 7, 1), dt.date(2027, 6, 30))],
    "CL-016": [(dt.date(2025, 2, 1), dt.date(2027, 1, 31))],
    "CL-017": [(dt.date(2025, 2, 1), dt.date(2027, 1, 31))],
    "CL-018": [(dt.date(2025, 6, 1), dt.date(2027, 5, 31))],
}
# BLS cards of the second staff members (2 years). CL-024's lapsed on 2026-03-15 and was renewed on
# 2026-04-20; its renewal was first keyed with an unreadable date (a row the audit rejects, which makes
# those STAFF-03 findings data-quality suspects). CL-029 joined on 2025-11-10 and was rostered for
# sessions before its card was on file.
BLS_CARDS: dict[str, list[tuple[dt.date, dt.date]]] = {
    "CL-021": [(dt.date(2025, 1, 20), dt.date(2027, 1, 31))],
    "CL-022": [(dt.date(2024, 10, 7), dt.date(2026, 10, 31))],
    "CL-023": [(dt.date(2025, 6, 9), dt.date(2027, 6, 30))],
    "CL-024": [(dt.date(2024, 3, 11), dt.date(2026, 3, 15)), (dt.date(2026, 4, 20), dt.date(2028, 4, 30))],
    "CL-025": [(dt.date(2024, 12, 2), dt.date(2026, 12, 31))],
    "CL-026": [(dt.date(2025, 2, 3), dt.date(2027, 2, 28))],
    "CL-027": [(dt.date(2024, 8, 12), dt.date(2026, 8, 31)), (dt.date(2026, 8, 17), dt.date(2028, 8, 31))],
    "CL-028": [(dt.date(2025, 5, 5), dt.date(2027, 5, 31))],
    "CL-029": [(dt.date(2025, 11, 10), dt.date(2027, 11, 30))],
    "CL-030": [(dt.date(2025, 3, 17), dt.date(2027, 3, 31))],
    "CL-031": [(dt.date(2025, 4, 7), dt.date(2027, 4, 30))],
    "CL-032": [(dt.date(2024, 11, 4), dt.date(2026, 11, 30))],
    "CL-033": [(dt.date(2025, 8, 11), dt.date(2027, 8, 31))],
    "CL-034": [(dt.date(2025, 1, 13), dt.date(2027, 1, 31))],
    "CL-035": [(dt.date(2024, 9, 9), dt.date(2026, 9, 30))],
}
BLS_ROLES = {"CL-021": "RN", "CL-022": "RN", "CL-023": "MA", "CL-024": "RN", "CL-025": "EMT", "CL-026": "RN",
             "CL-027": "RN", "CL-028": "MA", "CL-029": "RN", "CL-030": "EMT", "CL-031": "RN", "CL-032": "RN",
             "CL-033": "MA", "CL-034": "RN", "CL-035": "RN"}


def credentials(bad_rows: bool = True) -> list[Row]:
    """The staff roster's credentials: each clinician's professional licence and ACLS cards, each
    second staff member's BLS cards; one row per card, verified against its source a few days after
    issue (a generator of its own: no other file changes)."""
    rng = random.Random(SEED + 14)
    sites: dict[str, str] = {}
    for (site, _shift), (names, _weights) in ROSTER.items():
        sites.update(dict.fromkeys((n for n in names if n not in sites), site))
    for table in ({site: names for site, (names, _weights) in ESK_ROSTER.items()}, BLS_STAFF, ESK_BLS, ESK_PRESCRIBERS):
        for site, names in table.items():
            sites.update(dict.fromkeys((n for n in names if n not in sites), site))
    roles = {name: role for name, (role, _) in {**CLINICIANS, **ESK_CLINICIANS}.items()}
    roles["CL-016"] = "MD"
    rows: list[Row] = []

    def add(staff: str, role: str, kind: str, cards: list[tuple[dt.date, dt.date]]) -> None:
        for issued, expires in cards:
            rows.append({"credential_id": "", "staff_id": staff, "site_id": sites[staff], "role": role, "kind": kind,
                         "issued_on": issued.isoformat(), "expires_on": expires.isoformat(),
                         "verified_on": (issued + dt.timedelta(days=rng.randint(0, 9))).isoformat()})

    for staff in sorted(LICENCES):
        add(staff, roles[staff], "license", LICENCES[staff])
        cards = {**CLINICIANS, **ESK_CLINICIANS}.get(staff)
        if cards is not None:
            add(staff, roles[staff], "acls", cards[1])
    for staff in sorted(BLS_CARDS):
        add(staff, BLS_ROLES[staff], "bls", BLS_CARDS[staff])
    rows.sort(key=lambda r: (r["issued_on"], r["staff_id"], r["kind"]))
    if bad_rows:
        late = next(k for k, r in enumerate(rows) if r["staff_id"] == "CL-024" and r["issued_on"] == "2026-04-20")
        rows.insert(late, dict(rows[late], issued_on="2026-03-3", verified_on="2026-03-30",
                               _bad="issued_on = '2026-03-3': not an ISO date"))
    for number, r in enumerate(rows, start=1):
        r["credential_id"] = _id("CR", number, 3)
    return rows


PROBLEM_COLUMNS = {"problem_id": "string", "patient_id": "string", "code": "string", "display": "extra",
                   "onset_on": "date", "resolved_on": "date", "recorded_at": "datetime", "recorded_by": "string"}
COMORBIDITIES = [("F41.1", "Generalized anxiety disorder", 0.40), ("E78.5", "Hyperlipidemia, unspecified", 0.18),
                 ("G47.00", "Insomnia, unspecified", 0.22), ("F43.10", "Post-traumatic stress disorder", 0.12)]


def problems(sessions: list[Row], seed: int = SEED, bad_rows: bool = True) -> list[Row]:
    """Each treated patient's problem list, charted at intake (the day before the patient's first
    session in the export): the depression treated, hypertension where the patient has it, a few
    comorbidities; and planted contraindications: an IV patient with an active psychosis (F29)
    treated anyway (ELIG-05), another whose brief psychotic disorder (F23) resolved two years before
    (no finding), an IV patient whose cerebral aneurysm (I67.1) was found on an MRI in the middle of
    a course and who was infused after it (ELIG-07), and an esketamine patient with a past
    intracerebral haemorrhage (I61.9, ELIG-07-IN). A generator of its own: no other file changes."""
    rng = random.Random(f"{seed}:diagnoses")
    first: dict[str, Row] = {}
    visits: dict[str, list[Row]] = {}
    for row in sessions:
        t = row.get("_t")
        if not isinstance(t, dict) or row.get("_bad") or not row.get("session_date"):
            continue
        first.setdefault(row["patient_id"], row)
        visits.setdefault(row["patient_id"], []).append(row)
    rows: list[Row] = []

    def add(pid: str, code: str, display: str, onset: dt.date, resolved: dt.date | None = None,
            charted: dt.datetime | None = None) -> None:
        intake = first[pid]
        intake_at = dt.datetime.fromisoformat(intake["session_start"])
        at = charted or intake_at - dt.timedelta(days=1, hours=rng.randint(0, 3))
        rows.append({"problem_id": "", "patient_id": pid, "code": code, "display": display,
                     "onset_on": onset.isoformat(), "resolved_on": resolved.isoformat() if resolved else "",
                     "recorded_at": _iso(at), "recorded_by": INTAKE_STAFF[intake["site_id"]][0]})

    for pid in sorted(first):
        start = dt.date.fromisoformat(first[pid]["session_date"])
        add(pid, "F33.2", "Major depressive disorder, recurrent severe without psychotic features",
            start - dt.timedelta(days=rng.randint(2 * 365, 15 * 365)))
        if rng.random() < 0.3:
            add(pid, "I10", "Essential (primary) hypertension", start - dt.timedelta(days=rng.randint(400, 4000)))
        for code, display, rate in COMORBIDITIES:
            if rng.random() < rate:
                add(pid, code, display, start - dt.timedelta(days=rng.randint(100, 5000)))
    iv = sorted(pid for pid, rows_ in visits.items() if rows_[0]["route"] == "IV" and len(rows_) >= 8)
    esk = sorted(pid for pid, rows_ in visits.items() if rows_[0]["route"] == "IN" and len(rows_) >= 8)
    if iv and esk:
        active = iv[len(iv) // 5]
        start = dt.date.fromisoformat(first[active]["session_date"])
        add(active, "F29", "Unspecified psychosis not due to a substance or known physiological condition",
            start - dt.timedelta(days=60))
        past = iv[(2 * len(iv)) // 5]
        start = dt.date.fromisoformat(first[past]["session_date"])
        add(past, "F23", "Brief psychotic disorder", start - dt.timedelta(days=700), start - dt.timedelta(days=640))
        found = iv[(3 * len(iv)) // 5]
        fourth = visits[found][3]
        mri = dt.date.fromisoformat(fourth["session_date"]) - dt.timedelta(days=1)
        add(found, "I67.1", "Cerebral aneurysm, nonruptured", mri, None,
            dt.datetime.fromisoformat(fourth["session_start"]) - dt.timedelta(hours=20))
        bleed = esk[len(esk) // 2]
        add(bleed, "I61.9", "Nontraumatic intracerebral hemorrhage, unspecified", dt.date(2019, 5, 14),
            dt.date(2019, 7, 2))
    rows.sort(key=lambda r: (r["recorded_at"], r["patient_id"], r["code"]))
    for number, row in enumerate(rows, start=1):
        row["problem_id"] = _id("DX", number, 4)
    _misuse(rows, visits)
    if bad_rows and len(rows) > 20:
        k = next(i for i in range(len(rows) // 2, len(rows)) if rows[i]["code"] == "F41.1")
        rows[k]["onset_on"] = rows[k]["onset_on"][:5] + "13" + rows[k]["onset_on"][7:]
        rows[k]["_bad"] = f"onset_on = {rows[k]['onset_on']!r}: no month 13"
    return rows


def _misuse(rows: list[Row], visits: dict[str, list[Row]]) -> None:
    """Two planted misuse histories (ELIG-04, ELIG-04-IN), each charted in place of a comorbidity row
    so that no row, id or line moves: an IV patient's past ketamine misuse (F19.10, resolved years
    before) and an esketamine patient's phencyclidine dependence in remission (F16.21)."""
    for route, code, display, onset, resolved in (
            ("IV", "F19.10", "Other psychoactive substance abuse, uncomplicated (ketamine)", "2017-03-01",
             "2019-08-31"),
            ("IN", "F16.21", "Hallucinogen dependence, in remission (phencyclidine)", "2014-09-01", "2016-02-29")):
        treated = {pid for pid, seen in visits.items() if seen[0]["route"] == route and len(seen) >= 8}
        row = next((r for r in rows if r["patient_id"] in treated and r["code"] == "G47.00"), None)
        if row is not None:
            row.update(code=code, display=display, onset_on=onset, resolved_on=resolved)


PROFILE_COLUMNS = {"profile_id": "string", "patient_id": "string", "registered_at": "datetime", "sex": "enum",
                   "birth_year": "integer", "childbearing_potential": "boolean"}
PREGNANCY_TEST_COLUMNS = {"test_id": "string", "patient_id": "string", "collected_at": "datetime", "method": "enum",
                          "result": "enum"}


def profiles_and_pregnancy_tests(sessions: list[Row], iv_patients: list[Patient], esk_patients: list[EskPatient],
                                 seed: int = SEED, bad_rows: bool = True) -> tuple[list[Row], list[Row]]:
    """Each patient's registration (sex, birth year, and whether of childbearing potential, as the
    clinician charted it: women 18-50 mostly yes, 1 in 10 of them no (after a hysterectomy, say), 2%
    not charted) and the pregnancy tests (ELIG-06): a urine hCG 0-6 days before each course's first
    session for each patient of childbearing potential; 4% of courses without one, 3% with one 8-13
    days before (too old), and one positive test followed by an infusion; one registration exported
    twice. A generator of its own."""
    rng = random.Random(f"{seed}:pregnancy")
    profiles: list[Row] = []
    potential: dict[str, bool] = {}
    people = [(p.pid, p.sex) for p in iv_patients] + [(e.pid, e.sex) for e in esk_patients]
    starts: dict[str, dt.datetime] = {}
    for row in sessions:
        t = row.get("_t")
        if isinstance(t, dict):
            starts.setdefault(row["patient_id"], t["arrival"])
    for pid, sex in people:
        if pid not in starts:
            continue
        age = max(18, min(84, round(rng.gauss(44, 13))))
        able = sex == "F" and age <= 50 and rng.random() > 0.1
        potential[pid] = able
        charted = "" if sex == "F" and age <= 50 and rng.random() < 0.02 else ("true" if able else "false")
        registered = starts[pid] - dt.timedelta(days=rng.randint(3, 40), minutes=rng.randint(0, 240))
        profiles.append({"profile_id": "", "patient_id": pid, "registered_at": _iso(registered), "sex": sex,
                         "birth_year": str(starts[pid].year - age), "childbearing_potential": charted})
    profiles.sort(key=lambda r: r["patient_id"])
    for number, row in enumerate(profiles, start=1):
        row["profile_id"] = _id("REG", number, 4)
    if bad_rows and len(profiles) > 10:           # a registration exported twice: the copy is rejected
        k = len(profiles) // 4
        profiles.insert(k + 1, dict(profiles[k], _bad=f"duplicate profile_id {profiles[k]['profile_id']}"))
    tests: list[Row] = []
    eligible = [c for c in _courses(sessions, iv_patients, esk_patients) if potential.get(c.patient) and c.in_export]
    for course in eligible:
        draw = rng.random()
        if draw < 0.04:
            continue                                              # no test on file
        days = rng.randint(8, 13) if draw < 0.07 else rng.randint(0, 6)
        same_day = course.anchor - dt.timedelta(minutes=rng.randint(20, 50))
        at = _weekday_at(rng, course.anchor, days) if days else same_day
        tests.append({"test_id": "", "patient_id": course.patient, "collected_at": _iso(at),
                      "method": "urine_hcg" if rng.random() < 0.9 else "serum_hcg", "result": "negative",
                      "_current": days <= 6})
    # one positive test in time for its course, the patient treated anyway: ELIG-06 fails
    current = [row for row in tests if row["_current"]]
    if current:
        current[len(current) // 2]["result"] = "positive"
    tests.sort(key=lambda r: (r["collected_at"], r["patient_id"]))
    for number, row in enumerate(tests, start=1):
        row["test_id"] = _id("PT", number, 4)
    if bad_rows and len(tests) > 10:
        k = len(tests) // 2
        tests[k]["result"] = "neg"
        tests[k]["_bad"] = "result = 'neg': not one of the declared values"
    return profiles, tests


REVIEW_COLUMNS = {"review_id": "string", "patient_id": "string", "course_id": "string", "reviewed_at": "datetime",
                  "decision": "enum", "reason": "string", "reviewed_by": "string"}
CONTINUE_REASONS = ["partial response ({change}); suicidal ideation resolved; continue and re-rate in 4 weeks",
                    "partial response ({change}); patient reports better sleep and function; continue",
                    "improving ({change}); first response often late in this patient's history; continue",
                    "no comparable baseline on file ({change}); clinically improved per collateral; continue"]
STOP_REASONS = ["no meaningful response ({change}); back to the referring psychiatrist",
                "response ({change}); patient declines maintenance", "moved out of area"]


def treatment_reviews(sessions: list[Row], scales: list[Row], seed: int = SEED, bad_rows: bool = True) -> list[Row]:
    """The prescriber's review at the end of each induction course (OUT-02, OUT-02-IN): the afternoon
    of the last induction session (the 6th IV infusion, the 8th esketamine session) or a working day
    up to 5 days after it, and before the first maintenance session (8% of the late ones written the day
    after it instead), deciding to continue to maintenance or to stop, with the reason. The
    response is the end-of-induction PHQ-9 against the course's baseline PHQ-9 (half or less). Of
    the courses that go on to maintenance without a response, 6% have no review and 6% a review with
    no reason (and so does the first esketamine one); a responder's reason is sometimes left blank;
    one decision is keyed as an abbreviation. A generator of its own: no other file changes."""
    rng = random.Random(f"{seed}:reviews")
    courses: dict[tuple[str, str], list[Row]] = {}
    for row in sessions:
        if not row.get("_bad") and row.get("course_id") and row.get("session_start") and row["cancelled"] == "false":
            courses.setdefault((row["patient_id"], row["course_id"]), []).append(row)
    phq9 = [r for r in scales if r["instrument"] == "PHQ9" and re.fullmatch(r"\d+", r["total_score"])
            and not r.get("_bad")]
    by_session = {r["session_id"]: int(r["total_score"]) for r in phq9 if r["session_id"]}
    rows: list[Row] = []
    esk_blank = False
    for (pid, course), visits in sorted(courses.items()):
        last = "8" if visits[0]["route"] == "IN" else "6"
        end = next((v for v in visits if v["phase"] == "induction" and v["session_number_in_course"] == last), None)
        if end is None:
            continue
        start = dt.datetime.fromisoformat(visits[0]["session_start"])
        baselines = [int(r["total_score"]) for r in phq9 if r["patient_id"] == pid and not r["session_id"]
                     and dt.timedelta(0) < start - dt.datetime.fromisoformat(r["administered_at"]) <= dt.timedelta(60)]
        score = by_session.get(end["session_id"])
        change = f"PHQ-9 {baselines[-1]} to {score}" if baselines and score is not None else \
            f"PHQ-9 {score} at the end" if score is not None else "no end-of-induction score"
        responded = bool(baselines) and score is not None and max(baselines) >= 2 * score
        continued = any(v["phase"] == "maintenance" for v in visits)
        u = rng.random()
        if continued and responded:
            decision, reason = "continue", "" if u < 0.2 else f"response ({change}); continue to maintenance"
        elif continued:
            if u < 0.06:
                continue
            planted = visits[0]["route"] == "IN" and not esk_blank
            esk_blank = esk_blank or planted      # the first such esketamine course: a review with no reason
            decision, reason = "continue", "" if u < 0.12 or planted else \
                rng.choice(CONTINUE_REASONS).format(change=change)
        else:
            if u < 0.3:
                continue
            decision, reason = "stop", rng.choice(STOP_REASONS).format(change=change)
        seen = dt.datetime.fromisoformat(end["session_start"])
        at = seen + dt.timedelta(hours=rng.randint(3, 6))     # the same afternoon, after the rating
        day, later = at.date() + dt.timedelta(days=rng.randint(0, 5)), None
        while day != at.date() and (day.weekday() >= 5 or day in HOLIDAYS):
            day += dt.timedelta(days=1)                       # a later day: the next working day
        if day != at.date():
            later = _local(day, 12 * 60 + 5 * rng.randint(0, 60))
        at = later or at
        nxt = next((dt.datetime.fromisoformat(v["session_start"]) for v in visits if v["phase"] == "maintenance"
                    and dt.datetime.fromisoformat(v["session_start"]) > seen), None)
        if nxt is not None and at >= nxt:
            at = seen + dt.timedelta(hours=3)                 # decided before the next infusion...
            if decision == "continue" and rng.random() < 0.08:
                at = nxt + dt.timedelta(days=1, hours=2)      # ...but 8% written the day after it
        rows.append({"review_id": "", "patient_id": pid, "course_id": course, "reviewed_at": _iso(at),
                     "decision": decision, "reason": reason, "reviewed_by": rng.choice(REVIEWERS[end["site_id"]])})
    rows.sort(key=lambda r: (r["reviewed_at"], r["patient_id"]))
    for number, r in enumerate(rows, start=1):
        r["review_id"] = _id("TR", number, 4)
    if bad_rows and len(rows) > 10:
        k = (3 * len(rows)) // 4              # a continuation keyed as "cont.": not one of the decisions
        k = next((i for i in range(k, len(rows)) if rows[i]["decision"] == "continue"), k)
        rows[k]["decision"] = "cont."
        rows[k]["_bad"] = "decision = 'cont.': not one of the declared values"
    return rows


CONSENT_FORM_COLUMNS = {"form_version": "string", "form": "enum", "title": "extra", "effective_on": "date",
                        "retired_on": "date", "reconsent_required": "boolean"}
IV_CONSENT = "IV ketamine for depression (off-label use)"
CONSENT_FORMS = [("KIV-2023.1", "ketamine_iv", IV_CONSENT, "2023-01-09", "2025-06-30", False),
                 ("KIV-2025.1", "ketamine_iv", f"{IV_CONSENT}, rev. blood pressure section", "2025-07-01", "2026-03-31",
                  False),
                 ("KIV-2026.1", "ketamine_iv", f"{IV_CONSENT}, ASA 2025 guidance, adverse-event reporting",
                  "2026-04-01", "", True),
                 ("SPR-2020.1", "spravato", "SPRAVATO treatment and REMS", "2020-06-01", "2025-01-31", False),
                 ("SPR-2025.1", "spravato", "SPRAVATO treatment and REMS, respiratory depression", "2025-02-01", "",
                  False)]
CONSENT_COLUMNS = {"consent_id": "string", "patient_id": "string", "form": "enum", "form_version": "string",
                   "signed_on": "date", "witness_id": "string"}
RECONSENT_BY = dt.date(2026, 6, 1)      # the packs' reconsent_by: from then on, IV sessions need KIV-2026.1


def consent_forms() -> list[Row]:
    """The clinic's consent documents, a reference table (no patient): each version of the IV ketamine
    and the SPRAVATO consent form, when it took effect and was retired, and whether patients who
    signed an earlier version must sign it again (the IV form of April 2026 must be)."""
    return [{"form_version": version, "form": form, "title": title, "effective_on": start, "retired_on": end,
             "reconsent_required": "true" if again else "false"}
            for version, form, title, start, end, again in CONSENT_FORMS]


def _in_force(form: str, day: dt.date) -> str:
    for version, kind, _title, start, end, _again in CONSENT_FORMS:
        if kind == form and dt.date.fromisoformat(start) <= day and (not end or day <= dt.date.fromisoformat(end)):
            return version
    return ""


def consents(sessions: list[Row], seed: int = SEED, bad_rows: bool = True) -> list[Row]:
    """The signed consent documents (CONS-02, CONS-03 and CONS-02-IN): one per consent date the
    sessions carry, on the form version in force that day, witnessed by an intake nurse of the site.
    Planted: 3% of IV signatures on the version retired before (an old paper stack); an esketamine
    consent filed under an IV form's version; and the April 2026 IV form, which needs re-consent by
    2026-06-01: 88% of the IV patients treated after that date sign it at a session (before the
    deadline when they had one), the rest never do. A patient whose latest consent is already on the
    new form is not asked again, even when that consent came with a course begun after the summer:
    such a patient's summer sessions have no consent on it (two on the samples). A generator of its
    own: no other file changes."""
    rng = random.Random(f"{seed}:consents")
    signed: dict[tuple[str, str], Row] = {}
    later: dict[str, list[Row]] = {}
    for row in sessions:
        if row.get("_bad") or row["route"] not in ("IV", "IN") or not row.get("session_date"):
            continue
        if row["route"] == "IV" and row["cancelled"] == "false" and row["session_date"] >= "2026-04-01":
            later.setdefault(row["patient_id"], []).append(row)
        text = row.get("consent_signed_date", "")
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) or (row["patient_id"], text) in signed:
            continue
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            continue
        form = "ketamine_iv" if row["route"] == "IV" else "spravato"
        signed[(row["patient_id"], text)] = {"consent_id": "", "patient_id": row["patient_id"], "form": form,
                                              "form_version": _in_force(form, day), "signed_on": text,
                                              "witness_id": INTAKE_STAFF[row["site_id"]][0], "_route": row["route"]}
    rows = sorted(signed.values(), key=lambda r: (r["signed_on"], r["patient_id"]))
    old = {"KIV-2025.1": "KIV-2023.1", "KIV-2026.1": "KIV-2025.1"}
    for r in rows:
        if r["form_version"] in old and rng.random() < 0.03:
            r["form_version"] = old[r["form_version"]]
    esk = [r for r in rows if r["form"] == "spravato"]
    if esk:
        esk[len(esk) // 2]["form_version"] = "KIV-2025.1"
    for pid in sorted(later):
        visits = sorted(later[pid], key=lambda v: v["session_start"])
        due = [v for v in visits if v["session_date"] >= RECONSENT_BY.isoformat()]
        mine = [r for r in rows if r["patient_id"] == pid and r["form"] == "ketamine_iv"]
        if not due or (mine and mine[-1]["form_version"] == "KIV-2026.1") or rng.random() < 0.12:
            continue
        before = [v for v in visits if v["session_date"] < RECONSENT_BY.isoformat()] or due[:1]
        visit = rng.choice(before)
        rows.append({"consent_id": "", "patient_id": pid, "form": "ketamine_iv", "form_version": "KIV-2026.1",
                     "signed_on": visit["session_date"], "witness_id": INTAKE_STAFF[visit["site_id"]][0]})
    rows.sort(key=lambda r: (r["signed_on"], r["patient_id"], r["form_version"]))
    for number, r in enumerate(rows, start=1):
        r["consent_id"] = _id("CNS", number, 4)
        r.pop("_route", None)
    if bad_rows and len(rows) > 10:
        k = next((i for i in range(len(rows) - 1, -1, -1) if rows[i]["form_version"] == "KIV-2026.1"
                  and rows[i]["signed_on"][5:7] == "04"), len(rows) // 2)
        rows[k]["signed_on"] = rows[k]["signed_on"][:8] + "31"       # April has 30 days
        rows[k]["_bad"] = f"signed_on = '{rows[k]['signed_on']}': no such day"
    return rows


def _unscored_end_of_induction(sessions: list[Row], scales: list[Row]) -> None:
    """One end-of-induction PHQ-9 handed out but never scored (its total left empty, the row kept, so
    no line moves): that IV course has no rating at the end of induction (OUT-01)."""
    last = {row["session_id"] for row in sessions if row.get("route") == "IV" and row.get("phase") == "induction"
            and row.get("session_number_in_course") == "6"}
    ends = [row for row in scales if row.get("session_id") in last and row["instrument"] == "PHQ9"
            and row["total_score"] and "_bad" not in row]
    if ends:
        ends[(2 * len(ends)) // 3]["total_score"] = ""


# ----------------------------------------------------------------------------- writers

def write_csv(rows: Iterable[Row], path: str | Path,
              columns: dict[str, str] | None = None) -> list[tuple[int, str]]:
    """Write rows as CSV (header = line 1, LF line ends); ``columns`` defaults to the session
    columns. Returns (line, description) of the planted bad rows it wrote."""
    columns = COLUMNS if columns is None else columns
    broken = []
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(columns)
        for line, row in enumerate(rows, start=2):
            cells = [row.get(c, "") for c in columns]
            defect = row.get("_defect")
            if defect == "short_row":
                cells = cells[:-1]                           # the notes cell is missing
            elif defect == "extra_cell":
                cells = cells[:-1] + ["pt anxious", " BP rechecked"]   # unquoted comma in notes
            if "_bad" in row:
                broken.append((line, str(row["_bad"])))
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
                broken.append((line, str(row["_bad"])))
            fh.write(text + "\n")
    return broken


def export(seed: int = SEED, n_sessions: int = DEFAULT_SESSIONS, n_patients: int = DEFAULT_PATIENTS,
           esk_sessions: int = DEFAULT_ESK_SESSIONS, esk_patients: int = DEFAULT_ESK_PATIENTS,
           bad_rows: bool = True) -> dict[str, tuple[dict[str, str], list[Row]]]:
    """The whole mixed export: file stem -> (columns, rows). ``sessions`` holds the IV rows of
    :func:`generate` merged with the esketamine rows in arrival order."""
    iv_patients, iv_rows = _iv_export(n_sessions, n_patients, seed, bad_rows)
    iv = list(iv_rows)
    esk_people, esk = _esk_export(esk_sessions, esk_patients, seed, bad_rows) if esk_sessions else ([], [])
    sessions = list(_merge_sessions(iv, esk))
    screens, scales = screenings_and_assessments(sessions, iv_patients, esk_people, seed, bad_rows)
    if bad_rows:
        _unscored_end_of_induction(sessions, scales)
    readings = vitals(sessions, seed, bad_rows)
    profiles, pregnancy = profiles_and_pregnancy_tests(sessions, iv_patients, esk_people, seed, bad_rows)
    actions = interventions(readings, sessions, seed, bad_rows)
    return {
        "sessions": (COLUMNS, sessions),
        "screenings": (SCREENING_COLUMNS, screens),
        "vitals": (VITAL_COLUMNS, readings),
        "assessments": (ASSESSMENT_COLUMNS, scales),
        "enrollments": (ENROLLMENT_COLUMNS, enrollments(esk_people, bad_rows)),
        "credentials": (CREDENTIAL_COLUMNS, credentials(bad_rows)),
        "interventions": (INTERVENTION_COLUMNS, actions),
        "problems": (PROBLEM_COLUMNS, problems(sessions, seed, bad_rows)),
        "profiles": (PROFILE_COLUMNS, profiles),
        "pregnancy_tests": (PREGNANCY_TEST_COLUMNS, pregnancy),
        "adverse_events": (ADVERSE_EVENT_COLUMNS, adverse_events(readings, sessions, actions, seed, bad_rows)),
        "treatment_reviews": (REVIEW_COLUMNS, treatment_reviews(sessions, scales, seed, bad_rows)),
        "consent_forms": (CONSENT_FORM_COLUMNS, consent_forms()),
        "consents": (CONSENT_COLUMNS, consents(sessions, seed, bad_rows)),
    }


def main(argv: list[str] | None = None) -> int:
    here = Path(__file__).resolve().parent
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS, help="IV session rows (default %(default)s)")
    ap.add_argument("--patients", type=int, default=DEFAULT_PATIENTS, help="IV patients (default %(default)s)")
    ap.add_argument("--esk-sessions", type=int, default=DEFAULT_ESK_SESSIONS,
                    help="esketamine sessions, about (default %(default)s; 0 for none)")
    ap.add_argument("--esk-patients", type=int, default=DEFAULT_ESK_PATIENTS,
                    help="esketamine patients (default %(default)s)")
    ap.add_argument("--seed", type=int, default=SEED, help="random seed (default %(default)s)")
    ap.add_argument("--out", type=Path, default=here, help="output folder (default: next to this script)")
    ap.add_argument("--no-bad-rows", action="store_true", help="omit the malformed and duplicate rows")
    ap.add_argument("--no-forms", action="store_true",
                    help="skip the FHIR R4 (fhir/) and vendor-style (vendor/) forms of the export")
    ap.add_argument("--iv-only", action="store_true",
                    help="write only sessions.csv and sessions.ndjson with the IV sessions (streamed; any size)")
    args = ap.parse_args(argv)
    if args.sessions < 1 or args.patients < 1 or args.esk_sessions < 0 or args.esk_patients < 1:
        ap.error("--sessions and --patients must be at least 1, --esk-sessions at least 0")
    args.out.mkdir(parents=True, exist_ok=True)
    bad = not args.no_bad_rows
    csv_path, nd_path = args.out / "sessions.csv", args.out / "sessions.ndjson"
    if args.iv_only:
        def source() -> Iterator[Row]:
            return generate(args.sessions, args.patients, args.seed, bad)
        bad_csv = write_csv(source(), csv_path)
        bad_nd = write_ndjson(source(), nd_path)
        print(f"wrote {csv_path} and {nd_path} ({args.sessions} rows)", file=sys.stderr)
        for (line, what), (nd_line, _what) in zip(bad_csv, bad_nd, strict=True):
            print(f"  csv line {line} / ndjson line {nd_line}: {what}", file=sys.stderr)
        return 0
    files = export(args.seed, args.sessions, args.patients, args.esk_sessions, args.esk_patients, bad)
    for stem, (columns, rows) in files.items():
        path = args.out / f"{stem}.csv"
        broken = write_csv(rows, path, columns)
        print(f"wrote {path} ({len(rows)} rows)", file=sys.stderr)
        if stem == "sessions":
            bad_nd = write_ndjson(rows, nd_path)
            print(f"wrote {nd_path} ({len(rows)} rows)", file=sys.stderr)
            for (line, what), (nd_line, _what) in zip(broken, bad_nd, strict=True):
                print(f"  csv line {line} / ndjson line {nd_line}: {what}", file=sys.stderr)
        else:
            for line, what in broken:
                print(f"  line {line}: {what}", file=sys.stderr)
    if not args.no_forms:
        _write_forms(files, args.out)
    return 0


def _write_forms(files: dict[str, tuple[dict[str, str], list[Row]]], out: Path) -> None:
    """The same export as a FHIR R4 bulk export and as the Acme EHR vendor export (samples/forms.py)."""
    try:
        from samples import forms
    except ImportError:                      # run as a script: samples/ is on the path, not its parent
        import forms  # type: ignore[no-redef]
    for name, writer in (("fhir", forms.write_fhir), ("vendor", forms.write_vendor)):
        broken = writer(files, out / name)
        print(f"wrote {out / name}/", file=sys.stderr)
        for file_name, line, what in broken:
            print(f"  {name}/{file_name} line {line}: {what}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
