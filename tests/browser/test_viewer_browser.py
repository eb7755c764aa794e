"""The viewer in headless Chromium against a real ``pacs serve``: what a radiologist does.

Images are checked by pixel statistics of screenshots (not blank; window/level
changes the histogram; a measurement draws its label), and the viewer's state
through ``window.pacsViewer`` where a canvas cannot be read as text.
"""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = [pytest.mark.browser, pytest.mark.integration]

SETTLE = "() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))"
STACK_LOADED = "() => { const v = window.pacsViewer?.active; return !!v?.stack?.complete; }"


ViewerServer = Any  # tests/browser/conftest.py


def sign_in(
    page: Any, server: ViewerServer, username: str = "rad", path: str = "/worklist"
) -> None:
    page.goto(server.url(path))
    assert "/login" in page.url
    page.fill("#username", username)
    page.fill("#password", server.password)
    page.click("#login-form button[type=submit]")
    page.wait_for_load_state()
    assert "/login" not in page.url


def grey(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)


def histogram(pixels: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(pixels, bins=32, range=(0, 256))
    return counts / counts.sum()


def corner(page: Any, which: str) -> str:
    return page.locator(f".viewport.active .corner.{which}").inner_text()


def test_radiologist_reads_the_ct(desktop: Any, viewer_server: ViewerServer) -> None:
    page = desktop.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, viewer_server)

    # Search without diacritics, as typed on any keyboard.
    page.locator("#f-name").press_sequentially("nguyen thi", delay=20)
    page.wait_for_function(
        "() => document.querySelectorAll('#wl-body tr').length === 1 && "
        "document.querySelector('#wl-body .c-name').textContent === 'Nguyễn Thị Hồng Nhung'"
    )
    assert "nguyen" in page.url  # the search is in the address (back/forward keep it)
    page.click("#wl-body tr")
    page.wait_for_url("**/viewer/**")
    page.wait_for_function(STACK_LOADED, timeout=30_000)
    page.evaluate(SETTLE)
    viewport = page.locator(".viewport.active")
    assert "Nguyễn Thị Hồng Nhung" in corner(page, "tl")
    assert "Ảnh: 1/128" in corner(page, "bl")
    first = grey(viewport.screenshot())
    assert first.std() > 20, "the image is blank"
    assert 5 < first.mean() < 200

    # Scroll three images down with the wheel.
    box = viewport.bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(*centre)
    page.mouse.wheel(0, 120)  # three notches' worth
    page.wait_for_function("() => window.pacsViewer.active.pos >= 3")
    page.evaluate(SETTLE)
    position = page.evaluate("() => window.pacsViewer.active.pos")
    assert f"Ảnh: {position + 1}/128" in corner(page, "bl")
    scrolled = grey(viewport.screenshot())
    assert np.abs(scrolled - first).mean() > 0.5, "scrolling did not change the image"
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"() => window.pacsViewer.active.pos === {position + 1}")

    # Window/level by dragging (the default tool on a desktop).
    before = grey(viewport.screenshot())
    page.mouse.move(*centre)
    page.mouse.down()
    page.mouse.move(centre[0] + 160, centre[1] + 60, steps=8)
    page.mouse.up()
    page.evaluate(SETTLE)
    after = grey(viewport.screenshot())
    assert np.abs(histogram(after) - histogram(before)).sum() > 0.2, "W/L left the histogram"
    assert "W: 80 L: 40" not in corner(page, "br")

    # A preset puts the brain window back.
    page.select_option("#preset", "ct:brain")
    page.evaluate(SETTLE)
    assert "W: 80 L: 40" in corner(page, "br")

    # Measure a length: the label says mm.
    page.keyboard.press("l")
    start = (centre[0] - 100, centre[1])
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(start[0] + 200, start[1], steps=6)
    page.mouse.up()
    page.evaluate(SETTLE)
    labels = page.evaluate(
        "() => [...window.pacsViewer.active.measurements.values()].flat().flatMap(m => m.lines)"
    )
    assert len(labels) == 1 and re.fullmatch(r"\d+\.\d\d mm", labels[0]), labels
    length_mm = float(labels[0].split()[0])
    scale = page.evaluate("() => window.pacsViewer.active.zoom.scale")
    assert length_mm == pytest.approx(200 / scale * 0.45, rel=0.03)  # 0.45 mm pixels
    colours = rgb(viewport.screenshot())
    label_green = (colours[..., 1] > 200) & (colours[..., 0] < 150) & (colours[..., 2] < 180)
    assert label_green.sum() > 50, "the measurement is not drawn"

    # Switch to English: the pages follow and remember it.
    page.click(".lang-switch button[data-lang=en]")
    page.wait_for_load_state()
    page.wait_for_function(STACK_LOADED, timeout=30_000)
    assert page.evaluate("() => document.documentElement.lang") == "en"
    assert "Im: 1/128" in corner(page, "bl")
    assert page.locator("a.back").get_attribute("title") == "Worklist"
    page.goto(viewer_server.url("/worklist"))
    assert page.locator("label[for], .filters label").first.inner_text().startswith("Patient name")
    assert not errors, errors


def test_an_html_name_is_only_text(desktop: Any, viewer_server: ViewerServer) -> None:
    page = desktop.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, viewer_server)
    page.fill("#f-patient-id", "XSS1")
    page.wait_for_function("() => document.querySelectorAll('#wl-body tr').length === 1")
    cell = page.locator("#wl-body .c-name")
    assert "<img src" in cell.inner_text()
    assert page.locator("#wl-body img").count() == 0
    assert page.locator("#wl-body td", has_text="<script>alert(2)</script>").count() == 1
    cell.click()
    page.wait_for_function(STACK_LOADED, timeout=30_000)
    assert "<img src" in corner(page, "tl")
    page.keyboard.press("t")
    page.wait_for_function("() => document.querySelectorAll('#tags-body tr').length > 20")
    name_row = page.locator("#tags-body tr", has_text="PatientName")
    assert viewer_server.xss_name in name_row.inner_text()
    assert page.locator(".viewport img, #tags-body img").count() == 0
    assert dialogs == []


def test_an_undecodable_image_shows_a_message(desktop: Any, viewer_server: ViewerServer) -> None:
    page = desktop.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, viewer_server, "admin")  # "rad" may have chosen English in another test
    uid = page.evaluate(
        "() => fetch('/api/studies?patient_id=BROKEN1').then(r => r.json())"
        ".then(d => d.items[0].study_uid)"
    )
    page.goto(viewer_server.url(f"/viewer/{uid}"))
    message = page.locator(".viewport.active .message.error")
    message.wait_for(state="visible", timeout=20_000)
    assert "Không giải mã được ảnh này" in message.inner_text()
    assert page.locator("#toolbar").is_visible()
    assert not errors, errors


def test_a_phone_swipes_and_pinches(phone: Any, viewer_server: ViewerServer) -> None:
    page = phone.new_page()
    sign_in(page, viewer_server, "admin")
    uid = page.evaluate(
        "() => fetch('/api/studies?name=nguyen').then(r => r.json())"
        ".then(d => d.items[0].study_uid)"
    )
    page.goto(viewer_server.url(f"/viewer/{uid}"))
    page.wait_for_function("() => window.pacsViewer?.active?.lastRendered?.img", timeout=30_000)
    page.evaluate(SETTLE)
    # A phone gets server-rendered JPEGs sized for its screen, and swipes to scroll.
    assert page.evaluate("() => window.pacsViewer.mode") == "rendered"
    assert page.evaluate("() => window.pacsViewer.tool") == "scroll"
    assert grey(page.locator(".viewport.active").screenshot()).std() > 20
    box = page.locator(".viewport.active").bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 3
    cdp = phone.new_cdp_session(page)

    def touch(kind: str, points: list[tuple[float, float]]) -> None:
        cdp.send(
            "Input.dispatchTouchEvent",
            {
                "type": kind,
                "touchPoints": [{"x": px, "y": py, "id": i} for i, (px, py) in enumerate(points)],
            },
        )

    touch("touchStart", [(x, y)])
    for step in range(1, 11):
        touch("touchMove", [(x, y + step * 15)])
    touch("touchEnd", [])
    page.wait_for_function("() => window.pacsViewer.active.pos > 5")
    scale = page.evaluate("() => window.pacsViewer.active.zoom.scale")
    touch("touchStart", [(x - 30, y), (x + 30, y)])
    for step in range(1, 11):
        touch("touchMove", [(x - 30 - step * 8, y), (x + 30 + step * 8, y)])
    touch("touchEnd", [])
    page.evaluate(SETTLE)
    assert page.evaluate("() => window.pacsViewer.active.zoom.scale") > scale * 1.5


def test_two_viewports_compare_a_prior_study(desktop: Any, viewer_server: ViewerServer) -> None:
    page = desktop.new_page()
    sign_in(page, viewer_server)
    uid = page.evaluate(
        "() => fetch('/api/studies?accession=CR2406').then(r => r.json())"
        ".then(d => d.items[0].study_uid)"
    )
    page.goto(viewer_server.url(f"/viewer/{uid}"))
    page.wait_for_function(STACK_LOADED, timeout=30_000)
    page.select_option("#layout", "1x2")
    page.wait_for_function(
        "() => window.pacsViewer.viewports.length === 2 && "
        "window.pacsViewer.viewports.every(v => v.stack?.complete)",
        timeout=30_000,
    )
    series = page.evaluate("() => window.pacsViewer.viewports.map(v => v.stack.series.number)")
    assert series == [1, 2]
    shots = [grey(v.screenshot()) for v in page.locator(".viewport").all()]
    assert all(s.std() > 20 for s in shots)
    assert page.locator(".viewport.active .orient.left").inner_text() == "R"
    # The prior study of the same patient is listed; its series opens in the active viewport.
    prior = page.locator("#priors-list button.prior")
    assert prior.count() == 1 and "X-quang ngực cũ" in prior.inner_text()
    prior.click()
    thumb = page.locator("#priors-list .series-thumb")
    thumb.wait_for()
    page.locator(".viewport").nth(1).click()
    thumb.click()
    page.wait_for_function(
        "() => window.pacsViewer.active.index === 1 && window.pacsViewer.active.stack?.complete"
        " && window.pacsViewer.active.study.description === 'X-quang ngực cũ'",
        timeout=30_000,
    )
    assert "2023" in corner(page, "tr")
