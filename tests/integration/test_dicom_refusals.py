"""Who may talk to the archive: association refusals and per-AE permissions.

DCMTK tools call a running ``pacs serve``; every refusal must reach the caller as
a rejection or a failure status, and leave a log line naming the caller.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from support import echoscu, findscu, getscu, movescu, storescu

pytestmark = pytest.mark.integration

NOT_AUTHORIZED = 0x0124
# PS3.4 C.4.2.1.5: the C-MOVE status for a destination the SCP does not know.
MOVE_DESTINATION_UNKNOWN = "Refused: MoveDestinationUnknown"  # DCMTK's name for 0xA801


@pytest.fixture(scope="module")
def server(module_pacs_server):
    return module_pacs_server(
        aes=[
            {"title": "NOSTORE", "store": False},
            {"title": "NOQUERY", "query": False},
            {"title": "NORETRIEVE", "retrieve": False},
            {"title": "NOTADEST", "destination": False},
        ]
    )


@pytest.fixture(scope="module")
def one_file(shared_dicom: Path) -> Path:
    return sorted((shared_dicom / "vietnamese").glob("*.dcm"))[0]


def _final_status(output: str, what: str) -> str:
    """The status text DCMTK printed for the final response (``Received Final Find
    Response (…)``)."""
    match = re.search(rf"Received Final {what} Response \(([^)]*)\)", output)
    assert match, f"no final {what} response in:\n{output}"
    return match.group(1)


def _is_failure(status_text: str) -> bool:
    return not status_text.startswith(("Success", "Pending", "Warning"))


def _log_line_about(server, bookmark: int, *words: str) -> str:
    """The first log line after ``bookmark`` containing every word (case-insensitive)."""
    pattern = "".join(f"(?=.*{re.escape(w)})" for w in words)
    return server.wait_for_log(f"(?i){pattern}", since=bookmark, timeout=10)


def test_unknown_calling_ae_is_rejected_and_logged(server):
    bookmark = server.log_size()
    result = echoscu(server.host, server.dicom_port, calling_aet="STRANGER", called_aet="PACS")
    assert result.returncode != 0
    assert "Association Rejected" in result.output
    assert "Calling AE Title Not Recognized" in result.output
    line = _log_line_about(server, bookmark, "STRANGER")
    assert re.search(r"(?i)refus|reject", line), line


def test_wrong_called_ae_is_rejected_and_logged(server):
    bookmark = server.log_size()
    result = echoscu(server.host, server.dicom_port, calling_aet="ECHOSCU", called_aet="NOTPACS")
    assert result.returncode != 0
    assert "Called AE Title Not Recognized" in result.output
    line = _log_line_about(server, bookmark, "NOTPACS")
    assert re.search(r"(?i)refus|reject", line), line


def test_enrolled_ae_without_store_permission_gets_a_failure(server, one_file, storescu_results):
    bookmark = server.log_size()
    result = storescu(
        server.host, server.dicom_port, [one_file], calling_aet="NOSTORE", extra=["-v"]
    )
    status = storescu_results(result.output)[str(one_file)]
    assert status != "Success"
    assert status in ("Unknown Status: 0x124", "Refused: NotAuthorized"), status
    _log_line_about(server, bookmark, "NOSTORE", "store")
    # Nothing was archived.
    found = findscu(
        server.host,
        server.dicom_port,
        {"PatientID": "", "StudyInstanceUID": ""},
        calling_aet="FINDSCU",
    )
    assert found.returncode == 0, found.output
    assert found.responses == []


def test_enrolled_ae_without_query_permission_gets_a_failure(server):
    bookmark = server.log_size()
    result = findscu(
        server.host, server.dicom_port, {"PatientName": ""}, calling_aet="NOQUERY", extra=["-v"]
    )
    assert result.responses == []
    status = _final_status(result.output, "Find")
    assert _is_failure(status), status
    assert "0x124" in status or "NotAuthorized" in status, status
    _log_line_about(server, bookmark, "NOQUERY", "query")


def test_enrolled_ae_without_retrieve_permission_gets_a_failure_on_c_get(server, tmp_path):
    bookmark = server.log_size()
    result = getscu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": "1.2.3"},
        tmp_path / "got",
        calling_aet="NORETRIEVE",
        extra=["-v"],
    )
    assert result.files == []
    assert re.search(r"Number of Failed Suboperations\s*:\s*[1-9]", result.output), result.output
    _log_line_about(server, bookmark, "NORETRIEVE", "retrieve")


def test_enrolled_ae_without_retrieve_permission_gets_a_failure_on_c_move(server):
    bookmark = server.log_size()
    result = movescu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": "1.2.3"},
        "MOVESCU",
        calling_aet="NORETRIEVE",
        extra=["-v"],
    )
    assert _is_failure(_final_status(result.output, "Move"))
    _log_line_about(server, bookmark, "NORETRIEVE", "retrieve")


def test_c_move_without_retrieve_permission_is_refused_as_not_authorized(server):
    bookmark = server.log_size()
    result = movescu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": "1.2.3"},
        "MOVESCU",
        calling_aet="NORETRIEVE",
        extra=["-v"],
    )
    status = _final_status(result.output, "Move")
    assert "0x124" in status or "NotAuthorized" in status, status
    assert "Traceback" not in server.log_since(bookmark)


@pytest.mark.parametrize("destination", ["NOBODY", "NOTADEST"])
def test_c_move_to_an_unknown_destination_is_refused_a801(server, destination):
    """NOBODY is not enrolled; NOTADEST is enrolled without the destination permission."""
    bookmark = server.log_size()
    result = movescu(
        server.host,
        server.dicom_port,
        {"StudyInstanceUID": "1.2.3"},
        destination,
        calling_aet="MOVESCU",
        extra=["-v"],
    )
    assert _final_status(result.output, "Move") == MOVE_DESTINATION_UNKNOWN
    _log_line_about(server, bookmark, destination)


def test_server_still_answers_after_the_refusals(server):
    assert server.echo()


def test_enrolment_and_removal_take_effect_while_the_server_runs(server):
    """``pacs ae add`` / ``pacs ae remove`` on the running server's data (as an
    administrator would) are seen by the workers within their registry cache time."""
    assert not server.echo("LATECOMER")
    added = server.cli("ae", "add", "LATECOMER", "127.0.0.1", "104", "--no-store")
    assert added.returncode == 0, added.stdout + added.stderr
    server.wait_until_accepted("LATECOMER", timeout=15)
    listed = server.cli("ae", "list")
    assert re.search(r"^LATECOMER\s+127\.0\.0\.1:104\s+no\s+yes", listed.stdout, re.M), (
        listed.stdout
    )
    removed = server.cli("ae", "remove", "LATECOMER")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    deadline = time.monotonic() + 15
    while server.echo("LATECOMER"):
        assert time.monotonic() < deadline, "a removed AE is still accepted"
        time.sleep(0.2)
