"""The migrations: one linear chain, and the schema they build is what the models say.

A model changed without its migration works in the tests that create tables from the
migrations only by luck; on a production database upgraded from an older release it
fails at the first query. So the migrated schema is compared with the models, on
SQLite and on PostgreSQL (their types and constraints differ).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from pacs.storage.database import (
    _alembic_config,
    ensure_schema,
    schema_is_current,
    throwaway_engine,
    upgrade,
)
from pacs.storage.models import Base

#: every module that declares tables on Base (the app imports them all at some point)
MODEL_MODULES = (
    "pacs.storage.models",
    "pacs.storage.accounts",
    "pacs.storage.audit_models",
    "pacs.storage.dicomweb_models",
    "pacs.storage.sharing_models",
    "pacs.storage.jobs",
    "pacs.storage.consult_models",
)


@pytest.fixture(params=["sqlite", "postgresql"])
def migrated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'index.db'}"
    else:
        url = request.getfixturevalue("fresh_postgres_url")
    engine = throwaway_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def test_the_revisions_form_one_chain() -> None:
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    revisions = list(script.walk_revisions())
    assert len(script.get_heads()) == 1, script.get_heads()
    assert [r.revision for r in revisions if r.down_revision is None] == ["0001_archive"]
    assert all(not r.dependencies for r in revisions)


def test_the_migrated_schema_matches_the_models(migrated: Engine) -> None:
    for module in MODEL_MODULES:
        importlib.import_module(module)
    with migrated.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_a_migrated_database_is_current_and_accepted_as_is(migrated: Engine) -> None:
    assert schema_is_current(migrated)
    ensure_schema(migrated, auto_migrate=False)
