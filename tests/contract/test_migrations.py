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
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

from pacs.errors import StorageUnavailable
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


def _apply_alone(engine: Engine, revision: str) -> None:
    """Run one migration's upgrade whatever the version table says (as branches did)."""
    script = ScriptDirectory.from_config(_alembic_config(None))  # type: ignore[arg-type]
    with engine.connect() as conn:
        with Operations.context(MigrationContext.configure(conn)):
            script.get_revision(revision).module.upgrade()  # type: ignore[union-attr]
        conn.commit()


def _record(engine: Engine, revisions: list[str]) -> None:
    with engine.connect() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
        for revision in revisions:
            conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": revision})
        conn.commit()


@pytest.mark.parametrize(
    ("linear_to", "alone", "recorded"),
    [
        # the release with accounts and audit, before DICOMweb: 0003 was never applied
        ("0002_accounts", ["0004_audit"], ["0002_accounts", "0004_audit"]),
        # the release before consultation: four heads, 0002 implied by 0005's dependency
        ("0006_jobs", [], ["0003_dicomweb", "0004_audit", "0005_sharing", "0006_jobs"]),
    ],
    ids=["audit-before-dicomweb", "production-operations"],
)
def test_a_database_migrated_by_a_branched_release_is_brought_onto_the_chain(
    tmp_path: Path, linear_to: str, alone: list[str], recorded: list[str]
) -> None:
    engine = throwaway_engine(f"sqlite:///{tmp_path / 'index.db'}")
    command.upgrade(_alembic_config(engine), linear_to)
    for revision in alone:
        _apply_alone(engine, revision)
    _record(engine, recorded)
    with engine.connect() as conn:
        conn.execute(
            text(
                "INSERT INTO patients (patient_id, issuer, name, name_key, birth_date, sex,"
                " created_at) VALUES ('P1', '', 'Nguyễn^An', 'nguyen an', '', '', '2026-01-01')"
            )
        )
        conn.commit()
    assert not schema_is_current(engine)
    with pytest.raises(StorageUnavailable, match="pacs db upgrade"):
        ensure_schema(engine, auto_migrate=False)

    ensure_schema(engine, auto_migrate=True)

    assert schema_is_current(engine)
    for module in MODEL_MODULES:
        importlib.import_module(module)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []
        assert conn.execute(text("SELECT name FROM patients")).scalar_one() == "Nguyễn^An"
    engine.dispose()
