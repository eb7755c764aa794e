"""Fixtures every test suite shares. The helpers behind them live in ``tests/support``.

Real data comes from one setting, ``PACS_TEST_DICOM`` (default: ``../shared/dicom``
next to the repository). Missing prerequisites — the corpus, DCMTK, Orthanc,
PostgreSQL — skip a test on a developer machine and fail it under ``CI=true``.

Session fixtures:
    ``shared_dicom``         Path of the corpus folder.
    ``corpus_manifest``      ``MANIFEST.csv`` rows (dicts).
    ``vietnamese_manifest``  ``vietnamese/MANIFEST.csv`` rows (dicts).
    ``postgres``             a running throwaway :class:`~support.postgres.PostgresCluster`.
    ``postgres_url``         SQLAlchemy URL of a database on it, shared by the session.
    ``s3_endpoint``          a moto S3 server (:class:`~support.s3.S3Endpoint`).
    ``chromium``             Playwright's launcher for /usr/bin/chromium (``support.launch``).
Per-test fixtures:
    ``fresh_postgres_url``   URL of a new empty database, dropped afterwards.
    ``s3_bucket``            a bucket name no other test uses.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("pacs") is None:
    # A plain checkout without `pip install -e .`: test the code next to us.
    sys.path.insert(0, str(REPO_ROOT))

from support import (  # noqa: E402 - after the sys.path fallback above
    PostgresCluster,
    S3Endpoint,
    corpus_path,
    in_ci,
    load_manifest,
    load_vietnamese_manifest,
    moto_server,
    playwright_chromium,
    require_corpus,
    unique_bucket,
)


def pytest_report_header(config: pytest.Config) -> list[str]:
    mode = "CI (missing prerequisites fail)" if in_ci() else "local (missing prerequisites skip)"
    return [f"pacs test corpus: {corpus_path()}", f"pacs test mode: {mode}"]


# ---------------------------------------------------------------- real DICOM data


@pytest.fixture(scope="session")
def shared_dicom() -> Path:
    """The shared corpus folder (``$PACS_TEST_DICOM``); skips/fails when it is absent."""
    return require_corpus()


@pytest.fixture(scope="session")
def corpus_manifest(shared_dicom: Path) -> list[dict[str, str]]:
    """Rows of ``MANIFEST.csv``; ``row["path"]`` is relative to ``shared_dicom``."""
    return load_manifest(shared_dicom)


@pytest.fixture(scope="session")
def vietnamese_manifest(shared_dicom: Path) -> list[dict[str, str]]:
    """Rows of ``vietnamese/MANIFEST.csv``: one per patient, with the Unicode name."""
    return load_vietnamese_manifest(shared_dicom)


# ---------------------------------------------------------------- PostgreSQL


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the whole session, removed at the end."""
    with PostgresCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def postgres_url(postgres: PostgresCluster) -> str:
    """``postgresql+psycopg://`` URL of an empty database shared by the session."""
    return postgres.create_database("pacs_test")


@pytest.fixture
def fresh_postgres_url(postgres: PostgresCluster) -> Iterator[str]:
    """URL of a new empty database for one test; dropped (connections and all) after it."""
    url = postgres.create_database()
    yield url
    postgres.drop_database(url.rsplit("/", 1)[-1])


# ---------------------------------------------------------------- S3


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[S3Endpoint]:
    """A moto S3 server for the session: ``.endpoint``, ``.access_key``, ``.secret_key``…"""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket() -> str:
    """A bucket name unique to this test (the store creates it on first use)."""
    return unique_bucket()


# ---------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Playwright driving /usr/bin/chromium: one session for every test that needs it."""
    yield from playwright_chromium()
