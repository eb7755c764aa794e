"""When a test cannot run: skip on a developer machine, fail in CI.

A missing binary or data folder on a laptop is an inconvenience, so the test
skips with a message that says what to install or set. In CI (``CI=true``, as
GitHub Actions and GitLab set it) the same gap means the pipeline is not
testing what it claims to, so the test fails instead: never a silent skip in CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NoReturn

import pytest


def in_ci() -> bool:
    """True when the ``CI`` environment variable says we run in continuous integration."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def unavailable(reason: str) -> NoReturn:
    """Skip the current test (or fixture) with ``reason``; fail with it under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing prerequisite fails the run)", pytrace=False)
    pytest.skip(reason)


def require_tool(path_or_name: str | Path) -> Path:
    """The absolute path of an executable, or skip/fail (see :func:`unavailable`).

    An absolute path is checked as given: ``/usr/bin/storescu`` must be DCMTK's
    binary, and pynetdicom installs console scripts with the same names on PATH,
    so callers name DCMTK tools by absolute path. A bare name is looked up on PATH.
    """
    candidate = Path(path_or_name)
    if candidate.is_absolute():
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
        unavailable(f"required tool {candidate} is not installed")
    found = shutil.which(str(path_or_name))
    if found is None:
        unavailable(f"required tool {path_or_name!r} is not on PATH")
    return Path(found)
