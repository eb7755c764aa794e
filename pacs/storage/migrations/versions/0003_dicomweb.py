"""dicomweb: API tokens and scopes, CORS origins, precomputed series metadata

Revision ID: 0003_dicomweb
Revises: 0002_accounts
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_dicomweb"
down_revision = "0002_accounts"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("token_prefix", sa.String(length=16), nullable=False),
        sa.Column("all_studies", sa.Boolean(), nullable=False),
        sa.Column("can_write", sa.Boolean(), nullable=False),
        sa.Column("description", sa.String(length=255), nullable=False),
        sa.Column("created_by", sa.String(length=64), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _ts("revoked_at", nullable=True),
        _ts("last_used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_tokens_name"), ["name"], unique=False)

    op.create_table(
        "api_token_scopes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=64), nullable=False),
        sa.Column("granted_by", sa.String(length=64), nullable=False),
        _ts("granted_at"),
        _ts("expires_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["token_id"],
            ["api_tokens.id"],
            name=op.f("fk_api_token_scopes_token_id_api_tokens"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token_scopes")),
        sa.UniqueConstraint("token_id", "kind", "value", name="uq_api_token_scopes_grant"),
    )
    with op.batch_alter_table("api_token_scopes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_api_token_scopes_token_id"), ["token_id"], unique=False
        )
        batch_op.create_index("ix_api_token_scopes_kind_value", ["kind", "value"], unique=False)

    op.create_table(
        "dicomweb_cors_origins",
        sa.Column("origin", sa.String(length=255), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("origin", name=op.f("pk_dicomweb_cors_origins")),
    )

    op.create_table(
        "series_metadata",
        sa.Column("series_pk", sa.Integer(), nullable=False),
        _ts("source_updated_at", nullable=True),
        sa.Column("num_instances", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=True),
        sa.Column("frames", sa.LargeBinary(), nullable=True),
        _ts("built_at", nullable=True),
        sa.Column("build_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=255), nullable=False),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        _ts("claimed_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["series_pk"],
            ["series.id"],
            name=op.f("fk_series_metadata_series_pk_series"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("series_pk", name=op.f("pk_series_metadata")),
    )


def downgrade() -> None:
    op.drop_table("series_metadata")
    op.drop_table("dicomweb_cors_origins")
    with op.batch_alter_table("api_token_scopes", schema=None) as batch_op:
        batch_op.drop_index("ix_api_token_scopes_kind_value")
        batch_op.drop_index(batch_op.f("ix_api_token_scopes_token_id"))
    op.drop_table("api_token_scopes")
    with op.batch_alter_table("api_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_tokens_name"))
    op.drop_table("api_tokens")
