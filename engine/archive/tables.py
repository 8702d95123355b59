"""The archive's tables (SPEC 9), in SQLAlchemy Core: one definition for SQLite and PostgreSQL.

The schema itself is made and changed only by the Alembic migrations beside this module
(engine/archive/migrations); these definitions are what the code reads and writes, and a test
checks that the migrations make exactly them. Nothing here holds an identifier from the inputs: a
finding is its keyed fingerprint (an HMAC of pack, rule, record type and record key).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

audits = Table(
    "audits", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("archived_at", String(40), nullable=False),  # when it was stored (UTC, ISO 8601)
    Column("as_of", String(40), nullable=False),  # the audit's as-of time, as its report says it
    Column("tool_version", String(40), nullable=False),
    Column("pack_set", Text, nullable=False),  # its packs' ids, sorted, comma-joined: audits compared are of one set
    Column("period_from", String(10)),  # the period given (--period), each end a date or null
    Column("period_until", String(10)),
    Column("first_record", String(40)),  # the judged records' times
    Column("last_record", String(40)),
    Column("records_read", Integer, nullable=False),
    Column("records_judged", Integer, nullable=False),
    Column("records_rejected", Integer, nullable=False),
    Column("findings", Integer, nullable=False),
    Column("key_check", String(32), nullable=False),  # which pseudonym key made the fingerprints (an HMAC of a label)
)

audit_packs = Table(
    "audit_packs", metadata,
    Column("audit_id", Integer, ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True),
    Column("pack", String(200), primary_key=True),
    Column("version", String(100), nullable=False),
    Column("sha256", String(64), nullable=False),
)

audit_inputs = Table(
    "audit_inputs", metadata,
    Column("audit_id", Integer, ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("record_type", String(200)),
    Column("sha256", String(64)),
    Column("records_read", Integer, nullable=False),
    Column("records_judged", Integer, nullable=False),
    Column("records_rejected", Integer, nullable=False),
)

rule_results = Table(
    "rule_results", metadata,
    Column("audit_id", Integer, ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True),
    Column("pack", String(200), primary_key=True),
    Column("rule", String(200), primary_key=True),
    Column("position", Integer, nullable=False),  # the rule's place in its audit's report
    Column("title", Text, nullable=False),
    Column("severity", String(20), nullable=False),
    Column("target", Float),
    Column("applicable", Integer, nullable=False),
    Column("passed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("waived", Integer, nullable=False),
    Column("not_evaluable", Integer, nullable=False),
    Column("not_applicable", Integer, nullable=False),
    Column("compliance_rate", Float),
)

findings = Table(
    "findings", metadata,
    Column("audit_id", Integer, ForeignKey("audits.id", ondelete="CASCADE"), nullable=False),
    Column("pack", String(200), nullable=False),
    Column("rule", String(200), nullable=False),
    Column("record_type", String(200), nullable=False),
    Column("severity", String(20), nullable=False),
    Column("outcome", String(20), nullable=False),  # fail or waived
    Column("record_time", String(40)),  # ISO 8601 with the record's offset; null for a record without a time
    Column("fingerprint", String(64), nullable=False),
    Index("findings_by_audit", "audit_id", "pack", "rule"),
)
