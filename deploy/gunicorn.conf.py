"""gunicorn settings for the web side of a pacs node (see docs/operations.md).

    gunicorn -c deploy/gunicorn.conf.py 'pacs.viewer.wsgi:make_application()'

Settings come from pacs.toml / PACS_* like every pacs command. Each worker
builds its own archive (so no --preload), names itself ``node_name:pid`` in
store intents, and counts metrics into one multi-process directory that
``/metrics`` of any worker reports.
"""

from __future__ import annotations

import multiprocessing

from pacs.config import load_settings
from pacs.viewer.wsgi import prepare_web, web_worker_exited

_settings = load_settings()

bind = f"{_settings.host}:{_settings.http_port}"
# Threads serve the viewer's many small requests (frames, thumbnails) concurrently;
# processes use the cores. Two per core is a reasonable start (docs/operations.md).
workers = _settings.workers or max(2, multiprocessing.cpu_count())
worker_class = "gthread"
threads = 8
# STOW-RS uploads and WADO downloads of large studies take a while.
timeout = 300
graceful_timeout = max(30, int(_settings.shutdown_grace_s) + 10)
keepalive = 5
# Requests come through the reverse proxy: trust its X-Forwarded-* headers.
forwarded_allow_ips = "*"
preload_app = False
accesslog = "-"
errorlog = "-"


def on_starting(server: object) -> None:
    """Master, before any worker: schema check, this node's recovery, metrics directory."""
    prepare_web(_settings)


def child_exit(server: object, worker: object) -> None:
    web_worker_exited(_settings, worker.pid)  # type: ignore[attr-defined]
