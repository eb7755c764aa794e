"""What administrators operate with: deleting a study (CLI and web, audited), the
dashboard's data and page, and the archive-state gauges of ``/metrics``.

The web parts run the real Flask app (test client) and, for the page itself, a
real ``waitress`` server and Debian's headless Chromium through Playwright.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydicom.uid import generate_uid

from pacs.archive import Archive, Source
from pacs.bootstrap import build_archive
from pacs.config import Settings
from pacs.jobs import make_queue
from pacs.storage.index import RemoteNode
from pacs.viewer import dashboard
from pacs.viewer.app import create_app
from pacs.viewer.users import Accounts
from support import LOCALHOST, launch
from support.corpus import REPO_ROOT

pytestmark = pytest.mark.integration

SAMPLES = REPO_ROOT / "sample_dicom"
PASSWORD = "quản-trị-viên-2024"


@dataclass
class Site:
    settings: Settings
    archive: Archive
    app: Flask
    studies: dict[str, str]  # folder → Study Instance UID
    config: Path

    def client(self) -> FlaskClient:
        return self.app.test_client()


def _toml(settings: Settings) -> str:
    return f'[pacs]\nsecret_key = "{settings.secret_key}"\n'


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = Settings(data_dir=tmp_path / "data", secret_key="ops-test-secret")
    archive = build_archive(settings)
    studies = {}
    for folder, ae in (("ct_head", "CT_PHONG_2"), ("mr_brain", "MR_1_5T"), ("cr_chest", "CR_KHOA")):
        for path in sorted((SAMPLES / folder).glob("*.dcm")):
            result = archive.store_file(path, source=Source("dicom", ae_title=ae))
        studies[folder] = result.study_instance_uid
    accounts = Accounts(archive.index.engine)
    accounts.create("quantri", PASSWORD, role="admin")
    accounts.create("bacsi", PASSWORD, role="radiologist")
    for ae in ("CT_PHONG_2", "MR_1_5T", "XQ_CAPCUU"):
        archive.save_node(RemoteNode(ae, "10.0.0.5", 104, True, True, True, True, f"máy {ae}"))
    archive.seen_node("CT_PHONG_2")
    app = create_app(settings, archive)
    dashboard.register(app, archive)
    config = tmp_path / "pacs.toml"
    config.write_text(_toml(settings))
    yield Site(settings, archive, app, studies, config)
    archive.index.engine.dispose()


def sign_in(client: FlaskClient, username: str) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/login").text)
    assert token is not None
    response = client.post(
        "/login", data={"username": username, "password": PASSWORD, "csrf_token": token[1]}
    )
    assert response.status_code == 302, response.text[:300]
    return client.get("/api/session").json["csrf"]  # type: ignore[index]


def pacs(site: Site, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    group, sub, *rest = args
    options = ["--config", str(site.config), "--data-dir", str(site.settings.data_dir)]
    return subprocess.run(
        [sys.executable, "-m", "pacs", group, sub, *options, *rest],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------- deleting a study


def test_the_cli_deletes_a_study_after_confirmation_and_audits_it(site: Site) -> None:
    study = site.studies["mr_brain"]
    keys = [r.object_key for r in site.archive.instances(study_uid=study)]
    assert len(keys) == 24

    declined = pacs(site, "study", "delete", study, stdin="n\n")
    assert declined.returncode == 1, declined.stdout + declined.stderr
    assert "LE^VAN HUNG" in declined.stdout and "24 instance(s)" in declined.stdout
    assert len(site.archive.instances(study_uid=study)) == 24

    done = pacs(site, "study", "delete", study, "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"deleted study {study}: 24 instance(s)" in done.stdout
    assert site.archive.instances(study_uid=study) == []
    assert not any(site.archive.objects.exists(k) for k in keys)
    [row] = site.archive.audit.query(action="study.delete")
    assert (row.study_uid, row.patient_id, row.outcome) == (study, "24011542", "success")
    assert row.actor_kind == "system" and row.actor.startswith("cli:")
    assert row.details["instances"] == 24

    again = pacs(site, "study", "delete", study, "--yes")
    assert again.returncode == 1 and "no study" in again.stderr
    bad = pacs(site, "study", "delete", "1.2.x; DROP TABLE", "--yes")
    assert bad.returncode == 1 and "not a valid Study Instance UID" in bad.stderr


def test_only_admins_delete_studies_on_the_web_and_it_is_audited(site: Site) -> None:
    study = site.studies["cr_chest"]
    url = f"/admin/ops/api/studies/{study}"
    assert site.client().delete(url).status_code == 401

    rad = site.client()
    csrf = sign_in(rad, "bacsi")
    assert rad.delete(url, headers={"X-CSRF-Token": csrf}).status_code == 403

    admin = site.client()
    csrf = sign_in(admin, "quantri")
    assert admin.delete(url).status_code == 403  # no CSRF token
    assert (
        admin.delete(url.replace(study, "1.2.abc"), headers={"X-CSRF-Token": csrf}).status_code
        == 400
    )
    assert len(site.archive.instances(study_uid=study)) == 2

    response = admin.delete(url, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 200, response.text
    assert response.json["instances"] == 2  # type: ignore[index]
    assert site.archive.instances(study_uid=study) == []
    [row] = site.archive.audit.query(action="study.delete")
    assert (row.actor_kind, row.actor, row.study_uid) == ("user", "quantri", study)
    assert row.patient_name == "Trần^Văn Minh"
    assert admin.delete(url, headers={"X-CSRF-Token": csrf}).status_code == 404


# ---------------------------------------------------------------- the dashboard's data


def test_the_summary_reports_arrivals_storage_modalities_and_the_queue(site: Site) -> None:
    queue = make_queue(site.archive, site.settings)
    queue.enqueue("send.partner", {"to": "BV_HUE"})
    [job] = queue.claim(["send.partner"], "test:1")
    queue.fail(job, "association refused by BV_HUE", retry=False)
    queue.enqueue("route", {})

    admin = site.client()
    sign_in(admin, "quantri")
    assert admin.get("/admin/ops/api/summary?days=0").status_code == 400
    assert admin.get("/admin/ops/api/summary?offset=abc").status_code == 400
    data = admin.get("/admin/ops/api/summary?days=7&offset=420").json
    assert data is not None

    totals = site.archive.totals()
    assert data["totals"]["studies"] == totals["studies"] == 3
    assert data["storage"]["used_bytes"] == totals["bytes"]
    assert data["storage"]["backend"] == "filesystem" and data["storage"]["free_bytes"] > 0
    # Every study arrived just now: today, in the UTC+7 calendar the browser asked for.
    today = (datetime.now(UTC) + timedelta(minutes=420)).strftime("%Y-%m-%d")
    per_day = {(d["day"], d["modality"]): d["studies"] for d in data["studies_per_day"]}
    assert per_day == {(today, "CT"): 1, (today, "MR"): 1, (today, "CR"): 1}
    assert data["growth"] == {
        "baseline_bytes": 0,
        "days": [{"day": today, "studies": 3, "bytes": totals["bytes"]}],
    }

    rows = {m["ae_title"]: m for m in data["modalities"]}
    assert rows["CT_PHONG_2"]["last_contact"] is not None
    assert rows["CT_PHONG_2"]["last_store"] is not None and rows["CT_PHONG_2"]["series"] == 1
    assert rows["XQ_CAPCUU"]["last_contact"] is None and rows["XQ_CAPCUU"]["last_store"] is None
    assert rows["CR_KHOA"]["enrolled"] is False  # stored without being enrolled
    queue_rows = {q["kind"]: q for q in data["queue"]}
    assert queue_rows["send.partner"]["dead"] == 1 and queue_rows["route"]["queued"] == 1
    [failed] = data["failed_jobs"]
    assert failed["kind"] == "send.partner" and "BV_HUE" in failed["error"]

    rad = site.client()
    sign_in(rad, "bacsi")
    assert rad.get("/admin/ops/api/summary").status_code == 403
    assert rad.get("/admin/ops").status_code == 403
    assert site.client().get("/admin/ops").status_code == 302  # to the sign-in page


def test_metrics_report_the_archive_state_from_the_database(site: Site) -> None:
    queue = make_queue(site.archive, site.settings)
    for _ in range(3):
        queue.enqueue("send.partner", {})
    text = site.client().get("/metrics").text
    samples = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#")
    )
    totals = site.archive.totals()
    assert float(samples["pacs_index_up"]) == 1
    assert float(samples["pacs_studies"]) == totals["studies"]
    assert float(samples["pacs_instances"]) == totals["instances"]
    assert float(samples["pacs_storage_used_bytes"]) == totals["bytes"]
    assert float(samples['pacs_jobs{kind="send.partner",state="queued"}']) == 3
    seen = float(samples['pacs_remote_ae_last_contact_timestamp_seconds{ae_title="CT_PHONG_2"}'])
    assert abs(seen - datetime.now(UTC).timestamp()) < 600
    assert 'pacs_remote_ae_last_contact_timestamp_seconds{ae_title="XQ_CAPCUU"}' not in samples
    assert "pacs_instances_received_total" in text  # the counters are still there


# ---------------------------------------------------------------- the page, in Chromium


@pytest.fixture
def served(site: Site) -> Iterator[str]:
    from waitress.server import create_server

    server = create_server(site.app, host=LOCALHOST, port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield f"http://{LOCALHOST}:{server.effective_port}"
    server.close()


@pytest.mark.browser
def test_the_dashboard_draws_its_charts_and_deletes_a_study(
    site: Site, served: str, chromium: Any
) -> None:
    from playwright.sync_api import expect

    # A study that arrived "yesterday" so the charts have two days.
    extra = Path(tempfile.mkdtemp()) / "old.dcm"
    ds = pydicom.dcmread(SAMPLES / "us_cine" / "US_CINE.dcm")
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.save_as(extra)
    site.archive.store_file(extra, source=Source("dicom", ae_title="US_SANKHOA"))
    with site.archive.index.engine.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE studies SET created_at = datetime(created_at, '-1 day') WHERE study_uid = ?",
            (str(ds.StudyInstanceUID),),
        )
    doomed = site.studies["ct_head"]

    browser = launch(chromium, locale="en-GB")
    try:
        page = browser.new_page()
        external: list[str] = []
        page.on(
            "request",
            lambda r: external.append(r.url) if not r.url.startswith(served) else None,
        )
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{served}/login?next=/admin/ops")
        page.fill("input[name=username]", "quantri")
        page.fill("input[name=password]", PASSWORD)
        page.click("#login-form button[type=submit]")
        page.wait_for_url(f"{served}/admin/ops")
        page.wait_for_selector("body[data-loaded=true]")

        bars = page.locator("#chart-studies svg rect.bar")
        assert bars.count() == 4  # CT, MR, CR today; US yesterday
        assert {bars.nth(i).get_attribute("data-modality") for i in range(4)} == {
            "CT",
            "MR",
            "CR",
            "US",
        }
        assert len({bars.nth(i).get_attribute("data-day") for i in range(4)}) == 2
        assert page.locator("#chart-growth svg path.line").count() == 1
        assert page.locator("#chart-growth svg circle.point").count() == 30
        assert page.locator("#ops-modalities tr[data-ae=CT_PHONG_2]").count() == 1
        assert page.locator("#ops-totals .ops-card").count() == 4

        page.select_option("#ops-days", "7")
        # Locator expectations poll without evaluating strings (the page's CSP forbids that).
        expect(page.locator("#chart-growth svg circle.point")).to_have_count(7)

        page.once("dialog", lambda dialog: dialog.accept())
        page.fill("#delete-study-uid", doomed)
        page.click("#delete-study-button")
        page.wait_for_selector("#delete-study-result.info")
        assert doomed in page.text_content("#delete-study-result")  # type: ignore[operator]
        expect(page.locator("#chart-studies rect.bar[data-modality=CT]")).to_have_count(0)
    finally:
        browser.close()
    assert site.archive.instances(study_uid=doomed) == []
    assert site.archive.audit.query(action="study.delete")[0].actor == "quantri"
    assert errors == []
    assert external == []  # nothing fetched from anywhere else


# ---------------------------------------------------------------- the job queue, from the CLI


def test_the_jobs_commands_show_retry_and_probe_the_queue(pacs_server: Any, tmp_path: Path) -> None:
    server = pacs_server(web=False, settings={"job_poll_s": 0.2, "node_name": "kho-1"})
    archive = build_archive(Settings(data_dir=server.data_dir))
    queue = make_queue(archive, archive.settings)
    dead = queue.enqueue("send.partner", {"to": "BV_HUE"})
    [job] = queue.claim(["send.partner"], "test:1")
    queue.fail(job, "association refused by BV_HUE", retry=False)

    def jobs(*args: str) -> subprocess.CompletedProcess[str]:
        sub, *rest = args
        options = ["--config", str(server.config_path), "--data-dir", str(server.data_dir)]
        return subprocess.run(
            [sys.executable, "-m", "pacs", "jobs", sub, *options, *rest],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    status = jobs("status", "--failed")
    assert status.returncode == 1, status.stdout + status.stderr
    assert re.search(r"send\.partner\s+0\s+0\s+0\s+1", status.stdout), status.stdout
    assert (
        f"#{dead} send.partner after 1 attempt(s): association refused by BV_HUE" in status.stdout
    )

    retried = jobs("retry", str(dead), "999999")
    assert retried.returncode == 1 and "queued 1 job(s) again" in retried.stdout
    assert "job 999999 is not dead" in retried.stderr
    assert queue.get(dead).state == "queued"  # type: ignore[union-attr]

    # The server's worker runs the probes and says who it is.
    probe = jobs("probe", "--count", "4", "--timeout", "60")
    assert probe.returncode == 0, probe.stdout + probe.stderr
    [line] = probe.stdout.splitlines()
    assert re.fullmatch(rf"kho-1:{server.worker_pids()[0]}: 4", line), line
    archive.index.engine.dispose()


def test_every_dashboard_string_exists_in_vietnamese_and_english() -> None:
    used = set()
    script = (REPO_ROOT / "static" / "js" / "dashboard.js").read_text()
    used |= set(re.findall(r"""\bot\(\s*["']([a-z_.]+)["']""", script))
    template = (REPO_ROOT / "pacs" / "viewer" / "templates" / "ops" / "dashboard.html").read_text()
    used |= set(re.findall(r"""\bot\(\s*["']([a-z_.]+)["']""", template))
    python = (REPO_ROOT / "pacs" / "viewer" / "dashboard.py").read_text()
    used |= set(re.findall(r"""\btext\(\s*["']([a-z_.]+)["']""", python))
    assert len(used) > 30
    assert sorted(used - set(dashboard.STRINGS)) == []
    for key, (vi, en) in dashboard.STRINGS.items():
        assert vi.strip() and en.strip(), key
