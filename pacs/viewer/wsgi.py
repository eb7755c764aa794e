"""Serving the Flask app: with waitress on a socket shared by ``pacs serve``'s worker
processes, or under gunicorn (or any WSGI server) through :func:`make_application`.

    gunicorn -c deploy/gunicorn.conf.py 'pacs.viewer.wsgi:make_application()'

Each gunicorn worker builds its own archive (one engine per process) and names
itself ``node_name:pid`` in store intents, like ``pacs serve``'s workers. The
hooks :func:`prepare_web` and :func:`web_worker_exited` belong in gunicorn's
``on_starting`` and ``child_exit`` (see ``deploy/gunicorn.conf.py``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from pathlib import Path
from typing import Any

from flask import Flask
from waitress.server import create_server

from pacs.archive import Archive
from pacs.config import Settings
from pacs.viewer.app import create_app

log = logging.getLogger(__name__)


def _web_app(settings: Settings, archive: Archive) -> Flask:
    from pacs.viewer import dashboard, rendered_files, rendering

    rendering.configure_caches(frame_bytes=settings.frame_cache_mb << 20)
    rendering.configure_rendered_files(rendered_files.for_settings(settings, archive))
    app = create_app(settings, archive)
    # Idempotent: a no-op once create_app registers the dashboard itself.
    dashboard.register(app, archive)
    return app


def web_spool(settings: Settings, pid: int) -> Path:
    return settings.data_dir / "tmp" / f"web{pid}"


def prepare_web(settings: Settings, *, public_url: str = "") -> None:
    """Before a WSGI server forks its workers: check the schema (migrating only when
    ``auto_migrate`` is on), reconcile stores this node's dead workers left
    unfinished, clear their spool folders, create a first administrator when
    there is none (its password printed once on stdout, as ``pacs serve`` does)
    and start multi-process metrics.

    Raises StorageUnavailable (schema not current, database unreachable).
    """
    from pacs import metrics
    from pacs.bootstrap import build_archive
    from pacs.viewer.users import ensure_first_admin

    node = settings.effective_node_name
    archive = build_archive(settings, node=f"{node}:prepare")
    # No worker of this node runs yet: every intent under its name is a dead one's.
    archive.recover(node_prefix=f"{node}:")
    ensure_first_admin(archive, url=public_url)
    archive.index.engine.dispose()
    tmp = settings.data_dir / "tmp"
    for old in tmp.glob("web*") if tmp.is_dir() else []:
        shutil.rmtree(old, ignore_errors=True)
    metrics.enable(settings.data_dir / "metrics")
    if not settings.is_sqlite and not settings.secret_key:
        log.warning(
            "secret_key is not set: every node must sign sessions with the same key; "
            "set secret_key (PACS_SECRET_KEY) to one value on all of them"
        )


def web_worker_exited(settings: Settings, pid: int) -> None:
    """After a WSGI worker exited: drop its live gauges and its spool folder (its
    unfinished stores are swept once stale, or by :func:`prepare_web` at the next start)."""
    from pacs import metrics

    metrics.worker_exited(pid)
    shutil.rmtree(web_spool(settings, pid), ignore_errors=True)


def make_application(config_path: str | os.PathLike[str] | None = None) -> Flask:
    """The WSGI application for gunicorn and friends: settings from ``config_path``
    (else ``$PACS_CONFIG`` or ``./pacs.toml``) and ``PACS_*``, and an archive of its own.

    Call it in each worker process (gunicorn without ``--preload``): the archive's
    engine and its name in store intents are per process. Raises ConfigError or
    StorageUnavailable when the settings or the database are not usable.
    """
    from pacs.bootstrap import build_archive
    from pacs.config import load_settings
    from pacs.server import setup_logging

    settings = load_settings(Path(config_path) if config_path else None)
    setup_logging(settings.log_level)
    pid = os.getpid()
    spool = web_spool(settings, pid)
    spool.mkdir(parents=True, exist_ok=True)
    archive = build_archive(
        settings,
        node=f"{settings.effective_node_name}:{pid}",
        migrate=True,
        spool_dir=spool,
    )
    log.info("web worker %d of node %s ready", pid, settings.effective_node_name)
    return _web_app(settings, archive)


class WebService:
    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.app = _web_app(settings, archive)
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
