"""Share links in headless Chromium against a real ``pacs serve``.

A radiologist makes a link with a PIN from the worklist; a doctor without an
account opens it in a fresh browser, types the PIN, reads the images and
downloads the ZIP; the radiologist revokes it and the next open is refused.
A phone opens a link too. Afterwards neither the token nor the PIN may be found
in the server's log or in the audit table.
"""

from __future__ import annotations

import io
import sqlite3
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from support import launch

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SETTLE = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
STACK_LOADED = "() => { const v = window.pacsViewer?.active; return !!v?.stack?.complete; }"
PIN = "73915046"
MR_NAME = "LE VAN HUNG"

ViewerServer = Any  # tests/browser/conftest.py


@pytest.fixture
def stranger(chromium: Any) -> Iterator[Any]:
    """A second, fresh browser (own profile, no cookies): someone who only has the link."""
    context = launch(chromium, viewport={"width": 1280, "height": 800}, locale="en-GB")
    try:
        yield context
    finally:
        context.close()


def sign_in(page: Any, server: ViewerServer, username: str = "rad") -> None:
    page.goto(server.url("/worklist"))
    page.fill("#username", username)
    page.fill("#password", server.password)
    page.click("#login-form button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url


def grey(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def make_link_in_worklist(page: Any, *, pin: str = "", download: bool = False) -> str:
    """Share the MR study from the worklist's dialog; the link's address."""
    page.locator("#f-name").fill("le van")
    page.wait_for_function(
        "() => document.querySelectorAll('#wl-body tr').length === 1 && "
        "document.querySelector('#wl-body .c-name').textContent === 'LE VAN HUNG'"
    )
    page.click("#wl-body .share-button")
    page.wait_for_selector("#share-dialog[open]")
    page.wait_for_function("() => document.querySelectorAll('#share-days option').length > 0")
    assert page.locator("#share-days").input_value() == "7"  # the default expiry
    if pin:
        page.fill("#share-pin", pin)
    if download:
        page.check("#share-download")
    page.fill("#share-label", "BS. Hùng, BV Trung ương Huế")
    page.click("#share-create")
    page.wait_for_selector("#share-result:not([hidden])")
    assert page.locator("#share-qr svg").count() == 1
    url = page.locator("#share-url").input_value()
    assert "/s/" in url
    return url


def test_a_referring_doctor_opens_a_link_with_a_pin(
    desktop: Any, stranger: Any, viewer_server: ViewerServer
) -> None:
    rad = desktop.new_page()
    sign_in(rad, viewer_server)
    url = make_link_in_worklist(rad, pin=PIN, download=True)
    token = url.rsplit("/s/", 1)[1]
    # The dialog shows the link first, then reloads the study's list of links.
    rad.wait_for_selector("#share-links li.status-active")
    listed = rad.locator("#share-links li.status-active")
    assert listed.count() >= 1 and "BS. Hùng" in listed.first.inner_text()

    # A doctor without an account, in a browser of their own.
    doctor = stranger.new_page()
    errors: list[str] = []
    doctor.on("pageerror", lambda e: errors.append(str(e)))
    sent: list[dict[str, str]] = []
    doctor.on("request", lambda r: sent.append({"url": r.url, **r.headers}))
    doctor.goto(url)
    assert "/shared/pin" in doctor.url and token not in doctor.url
    doctor.fill("#pin", "1111")
    doctor.click("#pin-form button[type=submit]")
    assert "Wrong PIN" in doctor.locator("#pin-error").inner_text()
    doctor.fill("#pin", PIN)
    doctor.click("#pin-form button[type=submit]")
    doctor.wait_for_url("**/viewer/**")
    doctor.wait_for_function(STACK_LOADED, timeout=30_000)
    doctor.evaluate(SETTLE)
    # The token left the address bar, the history entry and the referrer.
    assert token not in doctor.url
    assert doctor.evaluate("() => document.referrer") == ""
    assert token not in doctor.evaluate("() => location.href + document.cookie")
    assert MR_NAME in doctor.locator(".viewport.active .corner.tl").inner_text()
    assert grey(doctor.locator(".viewport.active").screenshot()).std() > 10
    # Read-only: no worklist, no sharing, no key images.
    assert doctor.locator("a.back").count() == 0
    assert doctor.locator("[data-action=share]").count() == 0
    assert doctor.locator("[data-action=key-image]").count() == 0
    assert doctor.locator("#share-expiry").inner_text().startswith("Available until")
    # The ZIP: DICOM files and a JPEG per image.
    doctor.click("#download-button")
    with doctor.expect_download() as caught:
        doctor.click("#download-zip")
    path = Path(caught.value.path())
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        dicoms = [n for n in names if n.endswith(".dcm")]
        jpegs = [n for n in names if n.endswith(".jpg")]
        assert len(dicoms) == len(jpegs) == 24
        first = pydicom.dcmread(io.BytesIO(archive.read(dicoms[0])))
        assert first.PatientID == "24011542"
    doctor.keyboard.press("Escape")
    # No request the doctor's browser made carried the token after the first one.
    for request in sent[1:]:
        assert token not in request["url"], request["url"]
        assert token not in request.get("referer", ""), request["url"]
    assert errors == []

    # The radiologist revokes the link: the doctor's next request is refused.
    rad.locator("#share-links li.status-active [data-revoke]").first.click()
    rad.wait_for_function("() => document.querySelector('#share-links li.status-revoked') !== null")
    doctor.reload()
    doctor.wait_for_selector("#share-refused")
    assert doctor.locator("#share-refused").get_attribute("data-reason") == "revoked"
    assert "revoked" in doctor.locator("#share-message").inner_text()
    doctor.goto(url)
    assert doctor.locator("#share-refused").get_attribute("data-reason") == "revoked"

    # Neither the token nor the PIN in the server's log or the audit table.
    log_text = Path(viewer_server.log_path).read_text(errors="replace")
    assert "share link" in log_text
    assert token not in log_text and PIN not in log_text
    with sqlite3.connect(viewer_server.data_dir / "index.sqlite") as db:
        rows = db.execute("SELECT * FROM audit_events").fetchall()
        shares = db.execute("SELECT * FROM share_links").fetchall()
    assert any("share.open" in map(str, row) for row in rows)
    for row in rows + shares:
        text = " ".join(map(str, row))
        assert token not in text and PIN not in text
    for path in viewer_server.data_dir.glob("index.sqlite*"):
        data = path.read_bytes()
        assert token.encode() not in data and PIN.encode() not in data


def test_a_phone_opens_a_share_link(desktop: Any, phone: Any, viewer_server: ViewerServer) -> None:
    rad = desktop.new_page()
    sign_in(rad, viewer_server)
    url = make_link_in_worklist(rad)
    page = phone.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_url("**/viewer/**")
    page.wait_for_function("() => window.pacsViewer?.active?.lastRendered?.img", timeout=30_000)
    page.evaluate(SETTLE)
    assert page.evaluate("() => window.pacsViewer.mode") == "rendered"
    viewport = page.locator(".viewport.active")
    box = viewport.bounding_box()
    assert box["width"] > 300 and box["height"] > 400  # the image fills the phone
    assert grey(viewport.screenshot()).std() > 10
    # No download without permission, no way to the worklist.
    assert page.locator("#download-button").count() == 0
    assert page.locator("a.back").count() == 0
    # The series list opens from the toolbar.
    page.click("[data-action=toggle-series]")
    page.wait_for_selector(".viewer.show-sidebar .series-thumb")
    assert errors == []
    # Leaving ends the session in this browser.
    page.click("#share-leave")
    page.wait_for_selector("#share-refused")
    assert page.locator("#share-refused").get_attribute("data-reason") == "left"
    page.goto(url.rsplit("/s/", 1)[0] + "/api/studies")
    assert "Unauthenticated" in page.content()


def test_key_images_and_the_printed_sheet(desktop: Any, viewer_server: ViewerServer) -> None:
    page = desktop.new_page()
    sign_in(page, viewer_server)
    page.locator("#f-name").fill("le van")
    page.wait_for_function("() => document.querySelectorAll('#wl-body tr').length === 1")
    page.click("#wl-body tr")
    page.wait_for_url("**/viewer/**")
    page.wait_for_function(STACK_LOADED, timeout=30_000)
    page.click("#key-image-button")
    page.wait_for_function(
        "() => document.querySelector('#key-image-button').classList.contains('active')"
    )
    assert page.locator("#key-image-count").inner_text().startswith("1/")
    with page.context.expect_page() as opened:
        page.click("#sheet-link")
    sheet = opened.value
    sheet.wait_for_load_state()
    sheet.click("#sheet-link-form button[type=submit]")
    sheet.wait_for_selector("#sheet-qr svg")
    sheet.wait_for_function(
        "() => [...document.querySelectorAll('.sheet-images img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    assert "LE VAN HUNG" in sheet.locator(".sheet-patient").inner_text()
    sheet.emulate_media(media="print")
    # Printed: only the A4 sheet, white, with the QR code and the key image.
    assert sheet.locator(".sheet-tools").is_hidden()
    assert sheet.locator(".topbar").is_hidden()
    box = sheet.locator("#sheet").bounding_box()
    assert abs(box["height"] / box["width"] - 297 / 210) < 0.01  # one A4 page, no overflow
    shot = np.asarray(Image.open(io.BytesIO(sheet.locator("#sheet").screenshot())).convert("L"))
    assert shot[:40].mean() > 250 and shot[-40:].mean() > 250  # white paper, margins clear
    assert (shot < 40).mean() > 0.05  # and the key image, on black
    with sheet.expect_download() as caught:
        sheet.emulate_media(media="screen")
        sheet.click("#sheet-pdf")
    pdf = Path(caught.value.path()).read_bytes()
    assert pdf.startswith(b"%PDF-")
