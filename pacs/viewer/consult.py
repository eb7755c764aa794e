"""Remote consultation on the web: pages and JSON for radiologists and administrators,
the pacs-to-pacs endpoints partners call, and consultation links.

- :mod:`pacs.viewer.consult_api` — the pages (``/consult``) and their JSON
  (``/consult/api/...``): requests, answers, pushes, partners, rules, study badges;
- :mod:`pacs.viewer.consult_peer` — ``/consult/api/peer/...``, called by a
  partner's pacs with the token we issued it (``Authorization: Bearer``);
- :mod:`pacs.viewer.consult_link` — ``/c/<token>``: a partner without pacs reads
  the study in our viewer and answers.

The work itself is done by :mod:`pacs.consult` (Flask-free); :func:`register`
builds it for this process.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, request

from pacs.archive import Archive
from pacs.consult import Consult
from pacs.viewer import consult_i18n, i18n
from pacs.viewer.consult_i18n import ct

log = logging.getLogger(__name__)

EXTENSION = "pacs_consult"
BLUEPRINTS = ("consult", "consult_link")
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def consult() -> Consult:
    return current_app.extensions[EXTENSION]


def page_boot(**page: Any) -> dict[str, Any]:
    """The shared page boot data plus the consultation strings."""
    from pacs.viewer.ui import boot

    data = boot(**page)
    data["consult_strings"] = consult_i18n.catalog(i18n.current_language())
    return data


def _headers(response: Response) -> Response:
    """The pages' security headers (as the other pages get them from auth)."""
    if request.blueprint in BLUEPRINTS:
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def register(app: Flask, archive: Archive) -> None:
    """Add consultation to ``app`` (idempotent)."""
    if EXTENSION in app.extensions:
        return
    from pacs.viewer import consult_api, consult_link, consult_peer
    from pacs.viewer.ui import add_nav_link

    settings = app.config["PACS_SETTINGS"]
    app.extensions[EXTENSION] = Consult.build(settings, archive)
    consult_api.register(app)
    consult_peer.register(app)
    consult_link.register(app)
    app.after_request(_headers)
    add_nav_link(app, "consult.requests_page", consult_i18n.NAV_KEY, ("admin", "radiologist"), 25)

    @app.context_processor
    def _consult_globals() -> dict[str, Any]:
        # consult_enabled lets shared templates (the worklist) load the badges script.
        return {"ct": ct, "consult_enabled": True}
