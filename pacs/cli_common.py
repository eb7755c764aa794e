"""What every ``pacs`` command shares: its settings options and opening the archive.

Only light imports: `pacs serve`'s supervisor imports the command line, and what it
imports every forked worker carries too.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pacs.config import Settings, load_settings
from pacs.errors import PacsError

if TYPE_CHECKING:
    from pacs.archive import Archive


def settings_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--config and --data-dir, turned into a ``settings`` argument.

    A PacsError out of the command (a bad setting, an unreachable database) ends it
    with its reason and exit status 1, not a traceback.
    """

    @click.option(
        "--config",
        "config_path",
        type=click.Path(path_type=Path, dir_okay=False),
        help="pacs.toml to read (default: $PACS_CONFIG or ./pacs.toml).",
    )
    @click.option(
        "--data-dir",
        type=click.Path(path_type=Path, file_okay=False),
        help="Where the embedded index and object store live (default ./pacs-data).",
    )
    @functools.wraps(fn)
    def wrapper(config_path: Path | None, data_dir: Path | None, **kwargs: Any) -> Any:
        try:
            settings = load_settings(config_path, data_dir=data_dir)
            return fn(settings=settings, **kwargs)
        except PacsError as exc:
            raise click.ClickException(exc.reason) from exc

    return wrapper


def open_archive(settings: Settings) -> Archive:
    """The archive, schema migrated, for a command run by hand."""
    from pacs.bootstrap import build_archive

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return build_archive(settings)
    except PacsError as exc:
        raise click.ClickException(exc.reason) from exc
