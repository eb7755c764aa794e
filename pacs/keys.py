"""This installation's secret key: configured, or generated once per data directory.

It signs web sessions and (through a derived key) seals the tokens pacs presents to
partner hospitals. Several nodes on one database must configure the same
``secret_key``; a single node may leave it empty and let the first process make one.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from pacs.config import Settings


def installation_key(settings: Settings) -> str:
    """``settings.secret_key``, else ``data_dir/secret_key`` (created when missing).

    Several workers may start at once: the key is written to a private temporary
    file and linked into place, so exactly one key wins and every worker reads it.
    """
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".secret_key.")
        try:
            os.write(fd, secrets.token_hex(32).encode())
            os.close(fd)
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            Path(tmp).unlink(missing_ok=True)
    return path.read_text().strip()
