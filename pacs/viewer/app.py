"""Flask application factory: the web side of pacs.

Each concern is a module with a ``register(app, archive)`` function: sign-in and
users (``auth``), the pages (``ui``), the JSON the pages use (``api``) and the
DICOMweb services (``dicomweb``). They all reach patient data only through the
archive, and only after :func:`pacs.viewer.access.require_principal`.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import HTTPException

from pacs import activity, metrics
from pacs.archive import Archive
from pacs.config import Settings
from pacs.errors import PacsError
from pacs.keys import installation_key
from pacs.viewer import api, auth, consult, dashboard, dicomweb, ui

log = logging.getLogger(__name__)


def _wants_json() -> bool:
    if request.path.startswith(("/api/", "/dicomweb")):
        return True
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "application/json"


def create_app(settings: Settings, archive: Archive) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.update(
        SECRET_KEY=installation_key(settings),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PACS_SETTINGS=settings,
    )
    app.extensions["pacs_archive"] = archive

    @app.before_request
    def _start_clock() -> None:
        g.pacs_started = time.perf_counter()
        activity.touch()

    @app.after_request
    def _count(response: Response) -> Response:
        activity.touch()
        started = g.get("pacs_started")
        if started is not None:
            area = request.blueprint or request.path.strip("/").split("/", 1)[0] or "root"
            metrics.http_request(
                area, request.method, response.status_code, time.perf_counter() - started
            )
        return response

    @app.get("/metrics")
    def prometheus() -> Any:
        body, content_type = metrics.exposition()
        return Response(body, content_type=content_type)

    @app.get("/healthz")
    def healthz() -> Any:
        try:
            archive.check()
        except PacsError as exc:
            return jsonify(status="unavailable", reason=exc.reason), 503
        return jsonify(status="ok")

    @app.errorhandler(PacsError)
    def pacs_error(exc: PacsError) -> Any:
        log.warning(
            "%s %s refused: %s: %s", request.method, request.path, type(exc).__name__, exc.reason
        )
        return jsonify(error=type(exc).__name__, reason=exc.reason), exc.http_status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        if not _wants_json():
            return exc
        return jsonify(error=exc.name, reason=exc.description), exc.code

    auth.register(app, archive)
    ui.register(app, archive)
    api.register(app, archive)
    dicomweb.register(app, archive)
    dashboard.register(app, archive)
    consult.register(app, archive)
    return app
