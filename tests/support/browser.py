"""Debian's headless Chromium, driven by Playwright (never a downloaded browser).

One Playwright session serves the whole test run (the ``chromium`` fixture in
tests/conftest.py): its sync API refuses to start a second one inside the first's
event loop. Each test opens its own context with a fresh profile.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import Any

from .policy import require_tool, unavailable

CHROMIUM = "/usr/bin/chromium"
# What Chromium needs on these machines (no sandbox, no GPU, no phoning home).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


def playwright_chromium() -> Iterator[Any]:
    """Playwright's Chromium launcher for the session (fails in CI when missing)."""
    require_tool(CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed")
    with sync_playwright() as playwright:
        yield playwright.chromium


def launch(chromium: Any, **options: Any) -> Any:
    """A persistent context with a fresh profile directory (closed by the caller)."""
    profile = tempfile.mkdtemp(prefix="pacs-chromium-")
    return chromium.launch_persistent_context(
        profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, **options
    )
