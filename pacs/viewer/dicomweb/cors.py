"""CORS for DICOMweb, so a browser viewer served from another origin (OHIF) can call us.

Allowed origins are rows of ``dicomweb_cors_origins`` (managed with
``pacs token cors …`` or ``PUT /dicomweb/_cors``), shared by every worker and
read at most every few seconds per process. ``*`` allows any origin. Cookies
are never allowed cross-origin (no ``Access-Control-Allow-Credentials``): a
viewer on another origin authenticates with a bearer token.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Flask, Response, request

from pacs.archive import Archive
from pacs.errors import PacsError
from pacs.storage.dicomweb_models import CorsStore

log = logging.getLogger(__name__)

PATHS = ("/dicomweb", "/wado")
ALLOWED_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
DEFAULT_HEADERS = "Authorization, Accept, Content-Type, Range, If-None-Match"
EXPOSED_HEADERS = "Content-Type, Content-Length, Content-Location, ETag, Warning, Retry-After"
CACHE_S = 5.0
EXTENSION = "pacs_dicomweb_cors"


def normalise_origin(origin: str) -> str:
    """``https://Viewer.example.org/`` → ``https://viewer.example.org``; ValueError if not
    an origin (scheme://host[:port])."""
    origin = origin.strip().rstrip("/")
    if origin == "*":
        return origin
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or "/" in rest:
        raise ValueError(f"not an origin (scheme://host[:port]): {origin[:100]!r}")
    return f"{scheme.lower()}://{rest.lower()}"


class CorsPolicy:
    """The allowed origins, from the database, cached for a few seconds."""

    def __init__(self, store: CorsStore) -> None:
        self.store = store
        self._origins: frozenset[str] = frozenset()
        self._read_at = 0.0
        self._lock = threading.Lock()

    def origins(self) -> frozenset[str]:
        now = time.monotonic()
        with self._lock:
            if now - self._read_at > CACHE_S:
                try:
                    self._origins = frozenset(self.store.origins())
                except PacsError as exc:
                    log.warning("CORS origins unavailable, keeping the last known: %s", exc.reason)
                self._read_at = now
            return self._origins

    def forget(self) -> None:
        with self._lock:
            self._read_at = 0.0

    def allows(self, origin: str) -> bool:
        allowed = self.origins()
        try:
            return "*" in allowed or normalise_origin(origin) in allowed
        except ValueError:
            return False


def _applies() -> bool:
    return request.path.startswith(PATHS)


def register(app: Flask, archive: Archive) -> CorsPolicy:
    policy = CorsPolicy(CorsStore(archive.index.engine))
    app.extensions[EXTENSION] = policy

    @app.before_request
    def dicomweb_preflight() -> Response | None:
        if (
            request.method != "OPTIONS"
            or not _applies()
            or "Access-Control-Request-Method" not in request.headers
        ):
            return None
        origin = request.headers.get("Origin", "")
        response = Response(status=204)
        response.headers["Vary"] = "Origin"
        if not origin or not policy.allows(origin):
            log.warning("CORS preflight for %s from origin %r refused", request.path, origin)
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
        response.headers["Access-Control-Allow-Headers"] = (
            request.headers.get("Access-Control-Request-Headers") or DEFAULT_HEADERS
        )
        response.headers["Access-Control-Max-Age"] = "600"
        return response

    @app.after_request
    def dicomweb_cors_headers(response: Response) -> Response:
        if not _applies():
            return response
        if response.status_code == 401:
            response.headers.setdefault("WWW-Authenticate", 'Bearer realm="pacs"')
        origin = request.headers.get("Origin")
        if origin and "Access-Control-Allow-Origin" not in response.headers:
            response.headers.add("Vary", "Origin")
            if policy.allows(origin):
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        return response

    return policy
