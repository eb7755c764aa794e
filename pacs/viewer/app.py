"""Flask application factory: the web side of pacs."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from pacs.archive import Archive
from pacs.config import Settings
from pacs.errors import PacsError

log = logging.getLogger(__name__)


def create_app(settings: Settings, archive: Archive) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config["PACS_SETTINGS"] = settings
    app.extensions["pacs_archive"] = archive

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            archive.check()
        except PacsError as exc:
            return jsonify(status="unavailable", reason=exc.reason), 503
        return jsonify(status="ok")

    @app.errorhandler(PacsError)
    def pacs_error(exc: PacsError) -> Any:
        log.warning("%s: %s", type(exc).__name__, exc.reason)
        return jsonify(error=type(exc).__name__, reason=exc.reason), exc.http_status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.name, reason=exc.description), exc.code

    return app
