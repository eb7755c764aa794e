"""store_intents without secondary indexes

Revision ID: 0008_lean_store_intents
Revises: 0007_consult

The table holds only the stores in flight (a row lives from just before an object is
put until its instance is indexed), so recovery's scan by age reads a handful of rows
with or without an index. Each received instance inserted and deleted a row in both
indexes: 8 of the 23 pages it wrote to the WAL (counted with strace).
"""

from __future__ import annotations

from alembic import op

revision = "0008_lean_store_intents"
down_revision = "0007_consult"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("store_intents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_store_intents_object_key"))
        batch_op.drop_index(batch_op.f("ix_store_intents_created_at"))


def downgrade() -> None:
    with op.batch_alter_table("store_intents", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_store_intents_created_at"), ["created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_store_intents_object_key"), ["object_key"], unique=False
        )
