"""A throwaway PostgreSQL cluster for one test session.

``initdb`` a cluster in a temporary folder, run it on a free loopback port with
durability switched off (``fsync=off``: the data dies with the session anyway),
hand out databases, and remove it all at the end. PostgreSQL refuses to run as
root, so when the tests run as root the server runs as the ``postgres`` system
user (or ``nobody``) through ``runuser``, and owns its folder.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from .net import LOCALHOST, free_port, wait_for_port
from .policy import require_tool, unavailable

BINDIR_ENV = "PACS_TEST_PG_BINDIR"
SUPERUSER = "pacs"
SERVICE_USERS = ("postgres", "nobody")


def find_bindir() -> Path:
    """PostgreSQL's server binaries: ``$PACS_TEST_PG_BINDIR``, the newest
    ``/usr/lib/postgresql/<version>/bin`` (Debian), or ``initdb`` on PATH."""
    configured = os.environ.get(BINDIR_ENV)
    if configured:
        return Path(configured)

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(p) for p in re.findall(r"\d+", path.parent.name))

    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=version,
    )
    if candidates:
        return candidates[-1]
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else Path("/usr/lib/postgresql/15/bin")


def _service_user() -> str | None:
    """The unprivileged user the server runs as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in SERVICE_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    unavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


class PostgresCluster:
    """One running cluster; ``url()`` gives SQLAlchemy URLs to its databases."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.initdb = require_tool(self.bindir / "initdb")
        self.pg_ctl = require_tool(self.bindir / "pg_ctl")
        self.user = _service_user()
        self.port = free_port()
        # Not under pytest's tmp dir: that is private to root (0700), and the
        # server user must reach its data directory.
        self.base = Path(tempfile.mkdtemp(prefix="pacs-test-pg-"))
        self.data = self.base / "data"
        self.socket_dir = self.base / "sock"
        self.log = self.base / "server.log"
        self._running = False

    # ------------------------------------------------------------ running commands

    def _run(self, args: Sequence[str], timeout: float = 120.0) -> str:
        command = [str(a) for a in args]
        if self.user is not None:
            if shutil.which("runuser"):
                command = ["runuser", "-u", self.user, "--", *command]
            else:
                command = ["su", "-s", "/bin/sh", self.user, "-c", shlex.join(command)]
        proc = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
            cwd=self.base,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        output = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            log = self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{shlex.join(command)} failed ({proc.returncode}):\n{output}\n{log}"
            )
        return output

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """initdb, then start the server and wait until it accepts connections."""
        self.socket_dir.mkdir()
        if self.user is not None:
            info = pwd.getpwnam(self.user)
            for path in (self.base, self.socket_dir):
                os.chown(path, info.pw_uid, info.pw_gid)
        self._run(
            [
                self.initdb,
                "-D",
                self.data,
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                # C collation: byte order, the same order SQLite uses, so both
                # index backends sort identically.
                "--locale=C",
                "--no-sync",
            ]
        )
        options = " ".join(
            [
                f"-p {self.port}",
                f"-h {LOCALHOST}",
                f"-k {self.socket_dir}",
                "-F",  # fsync off
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                "-c shared_buffers=32MB",
            ]
        )
        self._run(
            [self.pg_ctl, "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "60", "start"]
        )
        self._running = True
        wait_for_port(LOCALHOST, self.port, 30, log=self.log)

    def stop(self) -> None:
        """Stop the server (fast shutdown) and delete its folder."""
        try:
            if self._running:
                try:
                    self._run([self.pg_ctl, "-D", self.data, "-m", "immediate", "-w", "stop"], 60)
                except (RuntimeError, subprocess.TimeoutExpired):
                    self._kill_postmaster()
                self._running = False
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> PostgresCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ databases

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``database`` on this cluster."""
        return f"postgresql+psycopg://{SUPERUSER}@{LOCALHOST}:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg  # imported late: only PostgreSQL tests need the driver

        with psycopg.connect(
            host=LOCALHOST, port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a unique name unless given); returns its URL."""
        name = name or f"pacs_{uuid.uuid4().hex[:12]}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"unsafe database name {name!r}")
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever still uses it."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
