"""DICOMweb (PS3.18) under /dicomweb: QIDO-RS, WADO-RS, WADO-URI and STOW-RS.

One module per concern:

- :mod:`.qido` — searches; :mod:`.wado` — instances, metadata, bulk data;
  :mod:`.pixels` — frames, rendered images, thumbnails; :mod:`.wado_uri` — WADO-URI;
  :mod:`.stow` — storing;
- :mod:`.tokens` — partner bearer tokens (a principal resolver); :mod:`.admin` —
  their JSON admin endpoints; :mod:`.cors` — cross-origin access for browser viewers;
- :mod:`.metadata` — per-series precomputed metadata (and :class:`MetadataBuilder`,
  which worker processes run periodically); :mod:`.frames` — frame byte layouts;
- :mod:`.dicomjson`, :mod:`.multipart`, :mod:`.negotiation`, :mod:`.transcode` —
  the formats.

Every endpoint resolves the caller with :func:`pacs.viewer.access.require_principal`
and passes its scope to the archive; a study outside the scope answers 404.
"""

from __future__ import annotations

from flask import Flask

from pacs.archive import Archive
from pacs.viewer.dicomweb import admin, cors, pixels, qido, stow, tokens, wado, wado_uri
from pacs.viewer.dicomweb.frames import LayoutCache
from pacs.viewer.dicomweb.metadata import MetadataBuilder, SeriesMetadataService

__all__ = ["MetadataBuilder", "register"]


def register(app: Flask, archive: Archive) -> None:
    """Add the DICOMweb endpoints, the bearer-token resolver and CORS to ``app``."""
    tokens.register(app, archive)
    cors.register(app, archive)
    app.extensions[wado.METADATA_EXTENSION] = SeriesMetadataService(archive)
    app.extensions[pixels.LAYOUT_EXTENSION] = LayoutCache()
    for blueprint in (qido.bp, wado.bp, pixels.bp, stow.bp, wado_uri.bp, admin.bp):
        app.register_blueprint(blueprint)
