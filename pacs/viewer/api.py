"""The JSON the pages use (worklist search, study and series details, frames)."""

from __future__ import annotations

from flask import Blueprint, Flask

from pacs.archive import Archive

bp = Blueprint("api", __name__)


def register(app: Flask, archive: Archive) -> None:
    app.register_blueprint(bp)
