"""The pages: study list (worklist) and viewer."""

from __future__ import annotations

from flask import Blueprint, Flask

from pacs.archive import Archive

bp = Blueprint("ui", __name__)


def register(app: Flask, archive: Archive) -> None:
    app.register_blueprint(bp)
