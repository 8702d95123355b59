"""The first archive: audits, their packs and inputs, per-rule counts and finding fingerprints.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audits",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("archived_at", sa.String(40), nullable=False),
        sa.Column("as_of", sa.String(40), nullable=False),
        sa.Column("tool_version", sa.String(40), nullable=False),
        sa.Column("pack_set", sa.Text, nullable=False),
        sa.Column("period_from", sa.String(10)),
        sa.Column("period_until", sa.String(10)),
        sa.Column("first_record", sa.String(40)),
        sa.Column("last_record", sa.String(40)),
        sa.Column("records_read", sa.Integer, nullable=False),
        sa.Column("records_judged", sa.Integer, nullable=False),
        sa.Column("records_rejected", sa.Integer, nullable=False),
        sa.Column("findings", sa.Integer, nullable=False),
        sa.Column("key_check", sa.String(32), nullable=False),
    )
    op.create_table(
        "audit_packs",
        sa.Column("audit_id", sa.Integer, sa.ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("pack", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
    )
    op.create_table(
        "audit_inputs",
        sa.Column("audit_id", sa.Integer, sa.ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("record_type", sa.String(200)),
        sa.Column("sha256", sa.String(64)),
        sa.Column("records_read", sa.Integer, nullable=False),
        sa.Column("records_judged", sa.Integer, nullable=False),
        sa.Column("records_rejected", sa.Integer, nullable=False),
    )
    op.create_table(
        "rule_results",
        sa.Column("audit_id", sa.Integer, sa.ForeignKey("audits.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("pack", sa.String(200), primary_key=True),
        sa.Column("rule", sa.String(200), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("target", sa.Float),
        sa.Column("applicable", sa.Integer, nullable=False),
        sa.Column("passed", sa.Integer, nullable=False),
        sa.Column("failed", sa.Integer, nullable=False),
        sa.Column("waived", sa.Integer, nullable=False),
        sa.Column("not_evaluable", sa.Integer, nullable=False),
        sa.Column("not_applicable", sa.Integer, nullable=False),
        sa.Column("compliance_rate", sa.Float),
    )
    op.create_table(
        "findings",
        sa.Column("audit_id", sa.Integer, sa.ForeignKey("audits.id", ondelete="CASCADE"), nullable=False),
        sa.Column("pack", sa.String(200), nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("record_type", sa.String(200), nullable=False),
        sa.Column("severity", sa.String(20), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("record_time", sa.String(40)),
        sa.Column("fingerprint", sa.String(64), nullable=False),
    )
    op.create_index("findings_by_audit", "findings", ["audit_id", "pack", "rule"])


def downgrade() -> None:
    for table in ("findings", "rule_results", "audit_inputs", "audit_packs", "audits"):
        op.drop_table(table)
