"""Precomputed series metadata: built off the ingest path, incrementally, shared between
builders by claims, and served without reading the instance files.

Runs the Flask app in-process (test client) on a real archive in a temporary
data directory.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from pacs.archive import Archive, Source
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.storage.dicomweb_models import SeriesMetadataStore, SeriesState, TokenStore, utcnow
from pacs.viewer.app import create_app
from pacs.viewer.dicomweb import MetadataBuilder
from pacs.viewer.dicomweb.tokens import create_token
from support import vietnamese_files

pytestmark = [pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
CT_HEAD = sorted((REPO / "sample_dicom" / "ct_head").glob("*.dcm"))
MR_BRAIN = sorted((REPO / "sample_dicom" / "mr_brain").glob("*.dcm"))


@dataclass
class App:
    archive: Archive
    client: FlaskClient
    headers: dict[str, str]
    data_dir: Path

    def series_metadata(self, study: str, series: str) -> list[dict]:
        response = self.client.get(
            f"/dicomweb/studies/{study}/series/{series}/metadata", headers=self.headers
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def flush(self) -> None:
        """Build whatever is stale, so that a test sees only its own series change."""
        MetadataBuilder(self.archive, quiet_s=0, node="flush").run_until_idle()


# One app for the module: tests work on different series of one archive.
@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("dicomweb-metadata"))
    archive = build_archive(settings)
    token = create_token(TokenStore(archive.index.engine), "t", all_studies=True).secret
    flask_app = create_app(settings, archive)
    yield App(
        archive,
        flask_app.test_client(),
        {"Authorization": f"Bearer {token}"},
        settings.data_dir,
    )
    archive.index.engine.dispose()


def _store(archive: Archive, files: list[Path]) -> None:
    for path in files:
        archive.store_file(path, source=Source("import"))


def _state(app: App, folder_file: Path) -> SeriesState:
    import pydicom

    series_uid = str(pydicom.dcmread(folder_file, stop_before_pixels=True).SeriesInstanceUID)
    (state,) = SeriesMetadataStore(app.archive.index.engine).series_state(series_uid=series_uid)
    return state


def test_builder_builds_quiet_series_incrementally(
    app: App, caplog: pytest.LogCaptureFixture
) -> None:
    app.flush()
    _store(app.archive, CT_HEAD[:100])
    builder = MetadataBuilder(app.archive, quiet_s=0, node="test-a")
    assert builder.run_once() == 1
    assert builder.run_once() == 0  # fresh now: nothing to do
    store = SeriesMetadataStore(app.archive.index.engine)
    state = _state(app, CT_HEAD[0])
    assert store.get(state.pk).fresh_for(state)  # type: ignore[union-attr]

    _store(app.archive, CT_HEAD[100:])
    state = _state(app, CT_HEAD[0])
    assert not store.get(state.pk).fresh_for(state)  # type: ignore[union-attr]
    # Still receiving (not quiet for a minute): the builder leaves it alone.
    assert MetadataBuilder(app.archive, quiet_s=60, node="test-a").run_once() == 0
    with caplog.at_level(logging.DEBUG, logger="pacs.viewer.dicomweb.metadata"):
        assert builder.run_once() == 1
    assert f"{len(CT_HEAD)} instances, {len(CT_HEAD) - 100} read, 100 reused" in caplog.text


def test_a_background_builder_yields_before_every_instance_it_reads(tmp_path: Path) -> None:
    archive = build_archive(Settings(data_dir=tmp_path))
    try:
        _store(archive, CT_HEAD[:30])
        paused: list[int] = []
        builder = MetadataBuilder(archive, quiet_s=0, node="test-a", pause=lambda: paused.append(1))
        assert builder.run_once() == 1
        assert len(paused) == 30
        _store(archive, CT_HEAD[30:40])
        assert builder.run_once() == 1
        assert len(paused) == 40  # the 30 reused entries are not read again
    finally:
        archive.index.engine.dispose()


def test_a_claimed_series_is_left_to_its_builder(app: App) -> None:
    app.flush()
    _store(app.archive, MR_BRAIN[:5])
    store = SeriesMetadataStore(app.archive.index.engine)
    state = _state(app, MR_BRAIN[0])
    assert store.claim(state.pk, "node-b", claim_expired_before=utcnow().replace(year=2000))
    assert MetadataBuilder(app.archive, quiet_s=0, node="node-a").run_once() == 0
    # An abandoned claim (older than the TTL) is taken over.
    assert MetadataBuilder(app.archive, quiet_s=0, claim_ttl_s=0, node="node-a").run_once() == 1


def test_built_metadata_is_served_without_reading_files(app: App) -> None:
    _store(app.archive, MR_BRAIN)
    app.flush()
    state = _state(app, MR_BRAIN[0])
    objects = app.data_dir / "objects"
    hidden = app.data_dir / "objects-hidden"
    shutil.move(objects, hidden)
    try:
        items = app.series_metadata(state.study_uid, state.series_uid)
    finally:
        shutil.move(hidden, objects)
    assert len(items) == len(MR_BRAIN)
    assert all("BulkDataURI" in item["7FE00010"] for item in items)


def test_stale_series_is_built_on_request(app: App, shared_dicom: Path) -> None:
    files = vietnamese_files(shared_dicom, "VN010001")
    _store(app.archive, files[:2])
    state = _state(app, files[0])
    assert len(app.series_metadata(state.study_uid, state.series_uid)) == 2
    _store(app.archive, files[2:])
    items = app.series_metadata(state.study_uid, state.series_uid)
    assert [item["00200013"]["Value"][0] for item in items] == [1, 2, 3]
    # Deleting an instance makes the series stale too.
    app.archive.delete(app.archive.instances(series_uids=[state.series_uid])[-1:])
    assert len(app.series_metadata(state.study_uid, state.series_uid)) == 2


def test_vietnamese_names_in_metadata(
    app: App, shared_dicom: Path, vietnamese_manifest: list[dict[str, str]]
) -> None:
    _store(app.archive, vietnamese_files(shared_dicom))
    app.flush()
    for row in vietnamese_manifest:
        url = f"/dicomweb/studies/{row['study_uid']}/metadata"
        items = app.client.get(url, headers=app.headers).get_json()
        assert len(items) == int(row["instances"]), row["encoding"]
        for item in items:
            assert item["00080005"]["Value"] == ["ISO_IR 192"]
            assert item["00100010"]["Value"][0]["Alphabetic"] == row["patient_name_unicode"]
            assert item["00081030"]["Value"][0] == row["study_description_unicode"]
