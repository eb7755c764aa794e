"""Sign-in, users and roles, sessions and CSRF protection."""

from __future__ import annotations

from flask import Blueprint, Flask

from pacs.archive import Archive

bp = Blueprint("auth", __name__)


def register(app: Flask, archive: Archive) -> None:
    app.register_blueprint(bp)
