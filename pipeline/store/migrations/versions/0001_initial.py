"""Initial schema: stations, inspections, defects, reviews, users.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# frozen copies of the model types: a migration must not change when the models do later
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stations",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("product", sa.String(length=200), nullable=False),
        sa.Column("config_yaml", sa.Text(), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stations")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("username", name=op.f("uq_users_username")),
    )
    _create_inspections()
    _create_defects()
    op.create_table(
        "reviews",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("defect_id", BIG_ID, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("defect_type", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("previous", sa.JSON(), nullable=True),
        sa.CheckConstraint(
            "decision IN ('unreviewed', 'confirmed', 'rejected')", name=op.f("ck_reviews_decision")
        ),
        sa.ForeignKeyConstraint(
            ["defect_id"], ["defects.id"], name=op.f("fk_reviews_defect_id_defects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
    )
    op.create_index(op.f("ix_reviews_defect_id"), "reviews", ["defect_id"], unique=False)


def _create_inspections() -> None:
    op.create_table(
        "inspections",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("captured_at", UTC_TIME, nullable=False),
        sa.Column("inspected_at", UTC_TIME, nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("worker", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["station_id"], ["stations.id"], name=op.f("fk_inspections_station_id_stations")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inspections")),
        sa.UniqueConstraint("station_id", "seq", name=op.f("uq_inspections_station_id_seq")),
    )
    op.create_index(
        op.f("ix_inspections_flagged_captured_at"), "inspections", ["flagged", "captured_at"], unique=False
    )
    op.create_index(
        op.f("ix_inspections_station_id_captured_at"),
        "inspections",
        ["station_id", "captured_at"],
        unique=False,
    )


def _create_defects() -> None:
    op.create_table(
        "defects",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("inspection_id", BIG_ID, nullable=False),
        sa.Column("station_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("evidence_path", sa.String(length=500), nullable=True),
        sa.Column("heatmap_path", sa.String(length=500), nullable=True),
        sa.Column("regions", sa.JSON(), nullable=False),
        sa.Column("position_words", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("verdict_status", sa.String(length=16), nullable=False),
        sa.Column("verdict_anomaly", sa.Boolean(), nullable=True),
        sa.Column("verdict_location", sa.Text(), nullable=True),
        sa.Column("verdict_defect_type", sa.Text(), nullable=True),
        sa.Column("verdict_description", sa.Text(), nullable=True),
        sa.Column("verdict_confidence", sa.Float(), nullable=True),
        sa.Column("verdict_raw", sa.Text(), nullable=True),
        sa.Column("review_state", sa.String(length=16), nullable=False),
        sa.Column("defect_type", sa.String(length=100), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("reviewed_by", sa.String(length=64), nullable=True),
        sa.Column("reviewed_at", UTC_TIME, nullable=True),
        sa.CheckConstraint(
            "review_state IN ('unreviewed', 'confirmed', 'rejected')", name=op.f("ck_defects_review_state")
        ),
        sa.CheckConstraint(
            "verdict_status IN ('pending', 'ok', 'unparsed', 'skipped', 'none')",
            name=op.f("ck_defects_verdict_status"),
        ),
        sa.ForeignKeyConstraint(
            ["inspection_id"],
            ["inspections.id"],
            name=op.f("fk_defects_inspection_id_inspections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["station_id"], ["stations.id"], name=op.f("fk_defects_station_id_stations")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_defects")),
        sa.UniqueConstraint("inspection_id", name=op.f("uq_defects_inspection_id")),
        sa.UniqueConstraint("station_id", "seq", name=op.f("uq_defects_station_id_seq")),
    )
    op.create_index(op.f("ix_defects_review_state"), "defects", ["review_state"], unique=False)


def downgrade() -> None:
    # drop_table drops the table's indexes with it
    op.drop_table("reviews")
    op.drop_table("defects")
    op.drop_table("inspections")
    op.drop_table("users")
    op.drop_table("stations")
