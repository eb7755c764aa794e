"""sharing: share links, their opens, and key images for result sheets

Revision ID: 0005_sharing
Revises: 0004_audit
(share_links.created_by references users, 0002_accounts)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_sharing"
down_revision = "0004_audit"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "share_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("series_uids", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_by_name", sa.String(length=64), nullable=False),
        sa.Column("label", sa.String(length=128), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_by", sa.String(length=64), nullable=False),
        sa.Column("pin_hash", sa.String(length=255), nullable=False),
        sa.Column("pin_failures", sa.Integer(), nullable=False),
        _ts("pin_locked_until", nullable=True),
        sa.Column("can_download", sa.Boolean(), nullable=False),
        sa.Column("deidentify", sa.Boolean(), nullable=False),
        sa.Column("pseudonym_salt", sa.String(length=64), nullable=False),
        sa.Column("open_count", sa.Integer(), nullable=False),
        _ts("first_opened_at", nullable=True),
        _ts("last_opened_at", nullable=True),
        sa.Column("last_opened_from", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_share_links_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_share_links_token_hash")),
    )
    op.create_index("ix_share_links_study_uid", "share_links", ["study_uid"])
    op.create_index("ix_share_links_created_by", "share_links", ["created_by"])
    op.create_table(
        "share_opens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("link_id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(length=160), nullable=False),
        sa.ForeignKeyConstraint(
            ["link_id"],
            ["share_links.id"],
            name=op.f("fk_share_opens_link_id_share_links"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_share_opens")),
    )
    op.create_index("ix_share_opens_link_id", "share_opens", ["link_id"])
    op.create_table(
        "key_images",
        sa.Column("study_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_uid", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("chosen_by", sa.String(length=64), nullable=False),
        _ts("chosen_at"),
        sa.PrimaryKeyConstraint("study_uid", "sop_uid", "frame", name=op.f("pk_key_images")),
    )


def downgrade() -> None:
    op.drop_table("key_images")
    op.drop_index("ix_share_opens_link_id", table_name="share_opens")
    op.drop_table("share_opens")
    op.drop_index("ix_share_links_created_by", table_name="share_links")
    op.drop_index("ix_share_links_study_uid", table_name="share_links")
    op.drop_table("share_links")
