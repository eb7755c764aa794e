"""Helpers for the consultation tests (``test_consult_*.py``).

- :func:`consult_env` — the environment of a ``pacs serve`` with quick job
  retries and a short routing window;
- :func:`start` — such a server, its AE title in ``pacs.toml`` too (so the
  commands run on its data directory know who they are);
- :func:`cli` — ``pacs partner|push|route|user ...`` in this process, on a
  server's data directory;
- :func:`link` — two servers registered as each other's partners, tokens both ways;
- :class:`Web` — a signed-in radiologist's JSON calls;
- :func:`wait_for` — poll until a condition holds.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from click.testing import CliRunner

PASSWORD = "Hoi-chan-2024!"
TOKEN = re.compile(r"pacs_[A-Za-z0-9_-]{20,}")


def consult_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        "PACS_JOB_POLL_S": "0.2",
        "PACS_JOB_BACKOFF_S": "0.5",
        "PACS_JOB_BACKOFF_MAX_S": "2",
        "PACS_CONSULT_ROUTE_SETTLE_S": "1",
        **(extra or {}),
    }


def start(factory: Any, ae_title: str, **kwargs: Any) -> Any:
    """A started ``pacs serve`` with consultation, calling itself ``ae_title``."""
    settings = {"ae_title": ae_title, **kwargs.pop("settings", {})}
    env = consult_env(kwargs.pop("env", None))
    return factory(ae_title=ae_title, settings=settings, env=env, **kwargs)


def cli(server: Any, group: str, *args: str, input: str | None = None) -> str:
    """Run ``pacs GROUP SUB ARGS`` in this process on ``server``'s data; its output."""
    from pacs.cli_partners import partner, push, route
    from pacs.cli_users import user

    command = {"partner": partner, "push": push, "route": route, "user": user}[group]
    sub, *rest = args
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PACS_")}
    result = CliRunner(env=unset).invoke(
        command,
        [sub, "--config", str(server.config_path), "--data-dir", str(server.data_dir), *rest],
        input=input,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, f"pacs {group} {' '.join(args)}: {result.output}"
    return result.output


def base_url(server: Any) -> str:
    return f"http://{server.host}:{server.http_port}"


def add_partner(server: Any, name: str, other: Any, *options: str) -> str:
    """Register ``other`` (a server) as partner ``name`` of ``server``; returns the token
    ``server`` issued for it."""
    out = cli(
        server,
        "partner",
        "add",
        name,
        "--ae-title",
        other.ae_title,
        "--host",
        other.host,
        "--port",
        str(other.dicom_port),
        "--dicomweb-url",
        base_url(other) + "/dicomweb",
        "--pacs-url",
        base_url(other),
        "--issue-token",
        *options,
    )
    found = TOKEN.search(out)
    assert found, out
    return found.group(0)


def give_token(server: Any, name: str, token: str, tmp: Path) -> None:
    """Store the token partner ``name`` gave ``server`` (through a file, as an operator would)."""
    path = tmp / f"{server.ae_title}-{name}.token"
    path.write_text(token)
    cli(server, "partner", "add", name, "--update", "--token-file", str(path))


def link(
    a: Any, b: Any, tmp: Path, *, a_options: tuple = (), b_options: tuple = ()
) -> tuple[str, str]:
    """Make ``a`` and ``b`` partners of each other (named after the other's AE title);
    returns the two tokens (for checks that they never reach a log)."""
    token_for_b = add_partner(a, b.ae_title, b, *a_options)
    token_for_a = add_partner(b, a.ae_title, a, *b_options)
    give_token(a, b.ae_title, token_for_a, tmp)
    give_token(b, a.ae_title, token_for_b, tmp)
    # Each side's registry cache takes up to 2 s to see the other's AE.
    a.wait_until_accepted(b.ae_title)
    b.wait_until_accepted(a.ae_title)
    return token_for_a, token_for_b


class Web:
    """A signed-in user of a server (``pacs user add`` first), with the CSRF header set."""

    def __init__(self, server: Any, username: str = "rad", role: str = "radiologist") -> None:
        cli(
            server,
            "user",
            "add",
            username,
            "--role",
            role,
            "--name",
            f"BS {username} {server.ae_title}",
            "--password-stdin",
            input=PASSWORD + "\n",
        )
        self.base = base_url(server)
        self.session = requests.Session()
        # No kept-alive connections: the server's shutdown would wait for them.
        self.session.headers["Connection"] = "close"
        html = self.session.get(self.base + "/login", timeout=30).text
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', html)
        assert csrf, "no CSRF token on the sign-in page"
        answer = self.session.post(
            self.base + "/login",
            json={"username": username, "password": PASSWORD},
            headers={"X-CSRF-Token": csrf.group(1)},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        self.session.headers["X-CSRF-Token"] = answer.json()["csrf"]

    def get(self, path: str, **kwargs: Any) -> Any:
        answer = self.session.get(self.base + path, timeout=30, **kwargs)
        assert answer.status_code == 200, f"GET {path}: {answer.status_code} {answer.text[:300]}"
        return answer.json() if "json" in answer.headers.get("Content-Type", "") else answer

    def post(self, path: str, body: Any, status: int = 200) -> Any:
        answer = self.session.post(self.base + path, json=body, timeout=30)
        assert answer.status_code == status, (
            f"POST {path}: {answer.status_code} {answer.text[:300]}"
        )
        return answer.json()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``condition`` until it returns something true; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.2)


def consult_of(server: Any) -> Any:
    """The server's consultation services, opened from this process (its database)."""
    from pacs.bootstrap import build_archive
    from pacs.config import load_settings
    from pacs.consult import Consult

    settings = load_settings(server.config_path, environ={}, data_dir=server.data_dir)
    return Consult.build(settings, build_archive(settings, migrate=False))
