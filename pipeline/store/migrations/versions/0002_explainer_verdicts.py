"""Explainer verdicts: episode, note, model and time of the verdict, agreement, two more statuses.

Revision ID: 0002_explainer
Revises: 0001
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_explainer"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
OLD_STATUSES = "verdict_status IN ('pending', 'ok', 'unparsed', 'skipped', 'none')"
NEW_STATUSES = "verdict_status IN ('pending', 'ok', 'unparsed', 'skipped', 'none', 'failed', 'episode')"


def upgrade() -> None:
    with op.batch_alter_table("defects") as batch:
        batch.add_column(sa.Column("verdict_episode_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("verdict_agrees", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("verdict_note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("verdict_model", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("verdict_at", UTC_TIME, nullable=True))
        batch.drop_constraint(op.f("ck_defects_verdict_status"), type_="check")
        batch.create_check_constraint(op.f("ck_defects_verdict_status"), NEW_STATUSES)


def downgrade() -> None:
    # the two new statuses have no older word: they fall back to "skipped" (no LLM verdict here)
    op.execute("UPDATE defects SET verdict_status = 'skipped' WHERE verdict_status IN ('failed', 'episode')")
    with op.batch_alter_table("defects") as batch:
        batch.drop_constraint(op.f("ck_defects_verdict_status"), type_="check")
        batch.create_check_constraint(op.f("ck_defects_verdict_status"), OLD_STATUSES)
        for column in (
            "verdict_at",
            "verdict_model",
            "verdict_note",
            "verdict_agrees",
            "verdict_episode_seq",
        ):
            batch.drop_column(column)
