"""DICOMweb (PS3.18) under /dicomweb: QIDO-RS, WADO-RS, WADO-URI and STOW-RS."""

from __future__ import annotations

from flask import Blueprint, Flask

from pacs.archive import Archive

bp = Blueprint("dicomweb", __name__)


def register(app: Flask, archive: Archive) -> None:
    app.register_blueprint(bp)
