"""A broken link: the receiving hospital, or the sending one, dies (SIGKILL) mid-push.

The sender records each instance the moment the partner confirms it. When the
receiver comes back, the queued job resumes and sends only what was not
confirmed; in the end the receiver holds every instance exactly once, with the
data set bytes as archived (checked by SOP Instance UID and bytes over C-GET),
and the receiver's own audit trail shows it was sent exactly what was missing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest
from consult_harness import cli, consult_of, start, wait_for
from sqlalchemy import select

from pacs.storage.audit_models import AuditEvent
from support import storescu

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
MR = REPO / "sample_dicom" / "mr_brain"
#: bytes per second from the sender: the 24 MR slices (3.2 MB) take about 16 s
CAP = "200k"


def _stores_audited(server, ae_title: str, since: datetime) -> int:
    """Instances ``server`` audited as stored from ``ae_title`` after ``since``."""
    engine = consult_of(server).archive.index.engine
    with engine.connect() as conn:
        rows = conn.execute(
            select(AuditEvent.details).where(
                AuditEvent.action == "dicom.store",
                AuditEvent.actor == ae_title,
                AuditEvent.at >= since,
            )
        ).all()
    return sum(json.loads(r.details or "{}").get("instances", 0) for r in rows)


def _linked(pacs_server, sender_env: dict[str, str] | None = None):
    """A sender and a receiver that know each other, the MR study archived on the sender.

    A plain DICOM partner on each side (no pacs-to-pacs calls); the receiver lets the
    sender count every study (scope "all") to verify the push.
    """
    receiver = start(pacs_server, "PACS_B")
    sender = start(pacs_server, "PACS_A", env=sender_env)
    cli(receiver, "partner", "add", "DISTRICT", "--ae-title", "PACS_A", "--host",
        sender.host, "--port", str(sender.dicom_port), "--scope", "all")  # fmt: skip
    cli(sender, "partner", "add", "CENTRAL", "--ae-title", "PACS_B", "--host",
        receiver.host, "--port", str(receiver.dicom_port), "--bandwidth", CAP)  # fmt: skip
    receiver.wait_until_accepted("PACS_A")
    files = sorted(MR.glob("*.dcm"))
    stored = storescu(sender.host, sender.dicom_port, files, called_aet="PACS_A")
    assert stored.returncode == 0, stored.output
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    return receiver, sender, files, study_uid


def _push_six_confirmed(sender, study_uid: str):
    """Start the push to CENTRAL and wait until 6 instances are confirmed."""
    out = cli(sender, "push", study_uid, "CENTRAL")
    pushes = consult_of(sender).pushes.store
    push_id = pushes.recent(limit=1)[0].id
    wait_for(lambda: pushes.get(push_id).sent >= 6, "six confirmed instances", timeout=60)
    return out, pushes, push_id


def _assert_resumed(pushes, push_id, receiver, since, confirmed, files, study_uid, what):
    """The push finished, sent after ``since`` exactly what was not confirmed, and the
    receiver holds every instance exactly once."""
    done = wait_for(lambda: (p := pushes.get(push_id)).state == "done" and p, what, timeout=120)
    assert (done.sent, done.total, done.refused, done.verified_count) == (24, 24, 0, 24)
    assert done.attempts >= 2
    assert _stores_audited(receiver, "PACS_A", since) == 24 - confirmed
    refs = consult_of(receiver).archive.instances(study_uid=study_uid)
    assert sorted(r.sop_uid for r in refs) == sorted(
        str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files
    )


def test_receiver_killed_mid_transfer_and_the_push_resumes(
    pacs_server, raw_get, read_dataset_bytes
):
    receiver, sender, files, study_uid = _linked(pacs_server)
    out, pushes, push_id = _push_six_confirmed(sender, study_uid)
    assert "24 instance(s)" in out
    receiver.kill9()

    # The sender notices (its C-STORE breaks), keeps what was confirmed, retries.
    broken = wait_for(
        lambda: (p := pushes.get(push_id)).state == "retrying" and p,
        "the sender to notice the broken link",
        timeout=90,
    )
    confirmed = broken.sent
    assert 6 <= confirmed < 24
    assert broken.last_error
    restarted_at = datetime.now(UTC)
    receiver.restart()

    # Exactly the missing instances were sent after the restart (nothing confirmed
    # twice), and every instance is on the receiver exactly once...
    _assert_resumed(
        pushes, push_id, receiver, restarted_at, confirmed, files, study_uid,
        "the push to finish after the restart",
    )  # fmt: skip
    # ...byte for byte as archived.
    metas = [pydicom.filereader.read_file_meta_info(f) for f in files]
    statuses, got = raw_get(
        receiver.host,
        receiver.dicom_port,
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": study_uid},
        sorted({(str(m.MediaStorageSOPClassUID), str(m.TransferSyntaxUID)) for m in metas}),
        called_aet="PACS_B",
    )
    assert statuses[-1] == 0x0000
    assert {uid: data for uid, (_, data) in got.items()} == {
        str(m.MediaStorageSOPInstanceUID): read_dataset_bytes(f)
        for m, f in zip(metas, files, strict=True)
    }
    assert receiver.verify().returncode == 0


def test_sender_killed_mid_transfer_resumes_after_its_restart(pacs_server):
    """A power cut at the sending hospital: its restarted node takes the push up again once
    the dead node's lease runs out, and sends only what the partner had not confirmed."""
    # A lease long enough that the restart (2–3 s here) is over before the push resumes.
    receiver, sender, files, study_uid = _linked(
        pacs_server, sender_env={"PACS_CONSULT_PUSH_LEASE_S": "15"}
    )
    _out, pushes, push_id = _push_six_confirmed(sender, study_uid)
    sender.kill9()
    confirmed = pushes.get(push_id).sent
    assert 6 <= confirmed < 24
    sender.restart()
    # The receiver has audited the association the power cut broke; nothing moved since.
    resumed_after = datetime.now(UTC)
    assert pushes.get(push_id).sent == confirmed

    # After the restart only the unconfirmed instances went out (one of them may have
    # reached the receiver just before the power cut: it is stored once, as a duplicate).
    _assert_resumed(
        pushes, push_id, receiver, resumed_after, confirmed, files, study_uid,
        "the push to finish after the sender's restart",
    )  # fmt: skip
    assert receiver.verify().returncode == 0
