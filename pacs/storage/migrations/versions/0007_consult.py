"""consult: partner hospitals, shares, pushes with per-instance confirmation, routing
rules, consultation requests; the study scope of remote AEs

Revision ID: 0007_consult
Revises: 0006_jobs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_consult"
down_revision = "0006_jobs"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _str(name: str, length: int) -> sa.Column:
    return sa.Column(name, sa.String(length=length), nullable=False)


def _int(name: str, big: bool = False, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.BigInteger() if big else sa.Integer(), nullable=nullable)


def upgrade() -> None:
    with op.batch_alter_table("remote_aes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("study_scope", sa.String(length=16), nullable=False, server_default="all")
        )

    op.create_table(
        "consult_partners",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("name", 64),
        _str("description", 255),
        _str("ae_title", 16),
        _str("host", 255),
        _int("port"),
        _str("dicomweb_url", 255),
        _str("pacs_url", 255),
        sa.Column("token_sealed", sa.Text(), nullable=False),
        _str("token_hint", 16),
        _str("transport", 16),
        _str("compression", 16),
        _int("bandwidth_bps", big=True),
        _int("inbound_token_id", nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.ForeignKeyConstraint(
            ["inbound_token_id"],
            ["api_tokens.id"],
            name=op.f("fk_consult_partners_inbound_token_id_api_tokens"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consult_partners")),
        sa.UniqueConstraint("name", name=op.f("uq_consult_partners_name")),
    )
    op.create_index(op.f("ix_consult_partners_ae_title"), "consult_partners", ["ae_title"])

    op.create_table(
        "consult_shares",
        sa.Column("id", sa.Integer(), nullable=False),
        _int("partner_id"),
        _str("study_uid", 64),
        _str("reason", 64),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["consult_partners.id"],
            name=op.f("fk_consult_shares_partner_id_consult_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consult_shares")),
        sa.UniqueConstraint("partner_id", "study_uid", name="uq_consult_shares_grant"),
    )
    op.create_index(op.f("ix_consult_shares_partner_id"), "consult_shares", ["partner_id"])
    op.create_index(op.f("ix_consult_shares_study_uid"), "consult_shares", ["study_uid"])

    op.create_table(
        "consult_pushes",
        sa.Column("id", sa.Integer(), nullable=False),
        _int("partner_id"),
        _str("study_uid", 64),
        sa.Column("series_uids", sa.Text(), nullable=False),
        _str("origin", 16),
        _int("rule_id", nullable=True),
        _int("consult_id", nullable=True),
        _str("transport", 16),
        _str("compression", 16),
        _str("state", 16),
        _str("owner", 64),
        _int("revision"),
        _int("total"),
        _int("sent"),
        _int("refused"),
        _int("bytes_total", big=True),
        _int("bytes_sent", big=True),
        _int("wire_bytes", big=True),
        _int("verified_count", nullable=True),
        _int("attempts"),
        sa.Column("last_error", sa.Text(), nullable=False),
        _str("created_by", 64),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["consult_partners.id"],
            name=op.f("fk_consult_pushes_partner_id_consult_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consult_pushes")),
        sa.UniqueConstraint("rule_id", "study_uid", name="uq_consult_pushes_rule_study"),
    )
    op.create_index(op.f("ix_consult_pushes_partner_id"), "consult_pushes", ["partner_id"])
    op.create_index(op.f("ix_consult_pushes_study_uid"), "consult_pushes", ["study_uid"])
    op.create_index("ix_consult_pushes_partner_state", "consult_pushes", ["partner_id", "state"])

    op.create_table(
        "consult_push_items",
        sa.Column("id", sa.Integer(), nullable=False),
        _int("push_id"),
        _str("sop_uid", 64),
        _int("size_bytes", big=True),
        _str("state", 16),
        _int("wire_bytes", big=True),
        sa.Column("no_compress", sa.Boolean(), nullable=False),
        _str("error", 255),
        _ts("confirmed_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["push_id"],
            ["consult_pushes.id"],
            name=op.f("fk_consult_push_items_push_id_consult_pushes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consult_push_items")),
        sa.UniqueConstraint("push_id", "sop_uid", name="uq_consult_push_items_sop"),
    )
    op.create_index("ix_consult_push_items_push_state", "consult_push_items", ["push_id", "state"])

    op.create_table(
        "consult_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("name", 64),
        _int("partner_id"),
        _str("calling_ae", 16),
        _str("modality", 16),
        _str("description_contains", 64),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _str("created_by", 64),
        _ts("created_at"),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["consult_partners.id"],
            name=op.f("fk_consult_rules_partner_id_consult_partners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consult_rules")),
    )
    op.create_index(op.f("ix_consult_rules_partner_id"), "consult_rules", ["partner_id"])

    op.create_table(
        "consult_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        _str("uid", 64),
        _str("direction", 16),
        _int("partner_id", nullable=True),
        _str("study_uid", 64),
        _str("patient_name", 324),
        _str("patient_id", 64),
        _str("study_description", 64),
        sa.Column("message", sa.Text(), nullable=False),
        _str("urgency", 16),
        _str("status", 16),
        _str("requested_by", 64),
        _str("requested_by_name", 128),
        sa.Column("answer_text", sa.Text(), nullable=False),
        _str("answer_sr_uid", 64),
        _str("answered_by", 128),
        sa.Column("key_images", sa.Text(), nullable=False),
        _int("share_link_id", nullable=True),
        _int("push_id", nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("sent_at", nullable=True),
        _ts("viewed_at", nullable=True),
        _ts("answered_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["consult_partners.id"],
            name=op.f("fk_consult_requests_partner_id_consult_partners"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["share_link_id"],
            ["share_links.id"],
            name=op.f("fk_consult_requests_share_link_id_share_links"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consult_requests")),
        sa.UniqueConstraint("uid", name=op.f("uq_consult_requests_uid")),
    )
    op.create_index(op.f("ix_consult_requests_partner_id"), "consult_requests", ["partner_id"])
    op.create_index(
        op.f("ix_consult_requests_share_link_id"), "consult_requests", ["share_link_id"]
    )
    op.create_index(op.f("ix_consult_requests_study_uid"), "consult_requests", ["study_uid"])
    op.create_index(
        "ix_consult_requests_direction_created", "consult_requests", ["direction", "created_at"]
    )


def downgrade() -> None:
    for table in (
        "consult_requests",
        "consult_rules",
        "consult_push_items",
        "consult_pushes",
        "consult_shares",
        "consult_partners",
    ):
        op.drop_table(table)
    with op.batch_alter_table("remote_aes", schema=None) as batch_op:
        batch_op.drop_column("study_scope")
