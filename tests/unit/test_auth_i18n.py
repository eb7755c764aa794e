"""Every user-visible string exists in Vietnamese and English, and every key used exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from werkzeug.datastructures import LanguageAccept

from pacs.storage.accounts import ROLES
from pacs.viewer import i18n

REPO = Path(__file__).resolve().parents[2]
TEMPLATES = REPO / "pacs" / "viewer" / "templates"
SCRIPTS = REPO / "static" / "js"
PYTHON = REPO / "pacs" / "viewer"

# t("key") / t('key') with a literal key, in templates, scripts and views.
_LITERAL_KEY = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-zA-Z0-9_.]+)["']""")


def _used_keys() -> dict[str, set[str]]:
    used: dict[str, set[str]] = {}
    files = [*TEMPLATES.rglob("*.html"), *SCRIPTS.rglob("*.js"), *PYTHON.glob("*.py")]
    for path in files:
        for key in _LITERAL_KEY.findall(path.read_text(encoding="utf-8")):
            used.setdefault(key, set()).add(path.name)
    return used


def test_every_literal_key_is_in_the_catalogue() -> None:
    used = _used_keys()
    assert len(used) > 100, "the key scan found too little: has the t() syntax changed?"
    missing = {key: sorted(files) for key, files in used.items() if key not in i18n.known_keys()}
    assert not missing


def test_keys_built_at_run_time_exist() -> None:
    keys = i18n.known_keys()
    for role in ROLES:
        assert f"role.{role}" in keys
    for sex in "FMO":
        assert f"sex.{sex}" in keys
    imaging = (SCRIPTS / "viewer" / "imaging.js").read_text()
    presets = re.findall(r'\{ key: "(\w+)"', imaging)
    assert len(presets) == 7
    for preset in presets:
        assert f"v.preset.{preset}" in keys
    viewer = (TEMPLATES / "ui" / "viewer.html").read_text()
    for tool in re.findall(r'data-tool="(\w+)"', viewer):
        assert f"v.tool.{tool}" in keys
    users = (PYTHON / "users.py").read_text()
    codes = set(re.findall(r'AccountError\(\s*"(\w+)"', users))
    assert codes, "no AccountError codes found"
    for code in codes:
        assert f"accounterr.{code}" in keys


def test_both_languages_say_something_for_every_key() -> None:
    vi, en = i18n.catalog("vi"), i18n.catalog("en")
    assert vi.keys() == en.keys()
    for key in vi:
        assert vi[key].strip() and en[key].strip(), key
        assert re.findall(r"\{(\w+)\}", vi[key]) == re.findall(r"\{(\w+)\}", en[key]), key


@pytest.mark.parametrize(
    ("cookie", "accept", "account", "expected"),
    [
        (None, "vi-VN,vi;q=0.9,en;q=0.8", "", "vi"),
        (None, "en-US,en;q=0.9", "", "en"),
        (None, "fr-FR", "", "vi"),
        (None, "", "", "vi"),
        ("en", "vi", "", "en"),
        ("xx", "en", "", "en"),
        (None, "vi", "en", "en"),
        ("vi", "en", "en", "vi"),
    ],
)
def test_language_negotiation(cookie: str | None, accept: str, account: str, expected: str) -> None:
    values = [
        (part.split(";")[0], 1.0 - i / 10) for i, part in enumerate(accept.split(",")) if part
    ]
    assert i18n.negotiate(cookie, LanguageAccept(values), account) == expected


def test_placeholders_are_filled() -> None:
    assert i18n.translate("wl.results", "vi", total=12) == "12 ca chụp"
    assert i18n.translate("wl.results", "en", total=12) == "12 studies"
    assert i18n.translate("no.such.key", "en") == "no.such.key"
