"""Serving the Flask app with waitress on a socket shared by the worker processes."""

from __future__ import annotations

import socket
import threading
from typing import Any

from waitress.server import create_server

from pacs.archive import Archive
from pacs.config import Settings
from pacs.viewer.app import create_app


class WebService:
    def __init__(self, settings: Settings, archive: Archive) -> None:
        from pacs.viewer import rendering

        rendering.configure_caches(frame_bytes=settings.frame_cache_mb << 20)
        self.settings = settings
        self.app = create_app(settings, archive)
        self.server: Any = None
        self._thread: threading.Thread | None = None

    def start(self, listener: socket.socket) -> None:
        # Other workers accept on the same socket; a lost accept race must not block.
        listener.setblocking(False)
        self.server = create_server(
            self.app,
            sockets=[listener],
            threads=8,
            ident="pacs",
            # Request bodies beyond this are spooled to disk by waitress, not kept in RAM.
            inbuf_overflow=1 << 20,
            max_request_body_size=4 << 30,
            channel_timeout=300,
        )
        self._thread = threading.Thread(target=self.server.run, name="http", daemon=True)
        self._thread.start()

    def stop_accepting(self) -> None:
        """Close the listener; requests in progress go on."""
        if self.server is not None:
            self.server.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.server is None:
            return
        if self._thread is not None:
            # The loop ends by itself once the last open connection is done.
            self._thread.join(timeout_s)
        self.server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
        self.server = None
