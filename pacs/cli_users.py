"""``pacs user``: web accounts from the command line (add, list, disable, enable, passwd).

Registered in :mod:`pacs.cli` with ``main.add_command(user)``. Passwords are
asked for without echo (twice), read from stdin with ``--password-stdin``, or
generated with ``--generate`` and printed once; they never reach the log nor
the audit trail, where every change is a row by the actor :func:`cli_actor`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from pacs.cli_common import open_archive, settings_options
from pacs.config import Settings
from pacs.errors import PacsError
from pacs.roles import ROLES


def cli_actor() -> Any:
    """The audit trail's actor for a command typed on the server: the OS account, "local"."""
    import getpass

    from pacs.audit import Actor

    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (containers)
        name = "unknown"
    return Actor("cli", name, "local")


class _CliAccounts:
    """The account operations and the archive they live in (for its audit trail)."""

    def __init__(self, settings: Settings) -> None:
        from pacs.viewer.users import Accounts

        self.archive = open_archive(settings)
        self.accounts = Accounts(self.archive.index.engine)

    def audit(self, action: str, outcome: str = "success", **details: Any) -> None:
        self.archive.audit.record(action, cli_actor(), outcome=outcome, details=details)


def _accounts(settings: Settings) -> Any:
    return _CliAccounts(settings).accounts


def _password(password_stdin: bool, generate: bool) -> tuple[str, bool]:
    """(password, was it generated)."""
    from pacs.viewer.users import random_password

    if generate and password_stdin:
        raise click.UsageError("use either --generate or --password-stdin")
    if generate:
        return random_password(), True
    if password_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise click.ClickException("no password on standard input")
        return line, False
    return (
        click.prompt("Password (mật khẩu)", hide_input=True, confirmation_prompt=True, err=True),
        False,
    )


def _run(
    action: Callable[[], Any], cli: _CliAccounts | None = None, audited: str = "", **details: Any
) -> Any:
    """Run an account action; with ``audited``, record its outcome in the audit trail."""
    from pacs.viewer.users import AccountError

    try:
        result = action()
    except AccountError as exc:
        if cli is not None and audited:
            cli.audit(audited, "failure", **details, reason=exc.code)
        raise click.ClickException(exc.message) from exc
    except PacsError as exc:
        raise click.ClickException(exc.reason) from exc
    if cli is not None and audited:
        cli.audit(audited, **details)
    return result


_password_options = [
    click.option(
        "--password-stdin", is_flag=True, help="Read the password from the first line of stdin."
    ),
    click.option("--generate", is_flag=True, help="Generate a random password and print it once."),
]


def _with_password_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(_password_options):
        fn = option(fn)
    return fn


@click.group("user")
def user() -> None:
    """Web accounts: administrators, radiologists, referring doctors."""


@user.command("add")
@settings_options
@click.argument("username")
@click.option(
    "--role",
    type=click.Choice(ROLES),
    required=True,
    help="admin: everything; radiologist: every study; referring: assigned studies only.",
)
@click.option("--name", "display_name", default="", help="Full name shown in the pages.")
@_with_password_options
def user_add(
    settings: Settings,
    username: str,
    role: str,
    display_name: str,
    password_stdin: bool,
    generate: bool,
) -> None:
    """Create a user."""
    cli = _CliAccounts(settings)
    password, generated = _password(password_stdin, generate)
    created = _run(
        lambda: cli.accounts.create(username, password, role=role, display_name=display_name),
        cli,
        "user.create",
        user=username[:64],
        role=role,
    )
    click.echo(f"created {created.username} ({created.role})")
    if generated:
        click.echo(f"password (shown once): {password}")


@user.command("list")
@settings_options
def user_list(settings: Settings) -> None:
    """List users with their role, state and last sign-in."""
    users = _run(lambda: _accounts(settings).store.list_users())
    if not users:
        click.echo("no users yet (pacs user add NAME --role admin)")
        return
    click.echo(f"{'username':24}  {'role':12}  {'state':9}  {'last sign-in':17}  name")
    for u in users:
        seen = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "never"
        state = "disabled" if u.disabled else "active"
        click.echo(f"{u.username:24}  {u.role:12}  {state:9}  {seen:17}  {u.display_name}")


@user.command("disable")
@settings_options
@click.argument("username")
def user_disable(settings: Settings, username: str) -> None:
    """Disable a user; they are signed out everywhere at once."""
    cli = _CliAccounts(settings)
    changed = _run(
        lambda: cli.accounts.set_disabled(username, True, actor="cli"),
        cli,
        "user.disable",
        user=username[:64],
    )
    click.echo(f"disabled {changed.username}")


@user.command("enable")
@settings_options
@click.argument("username")
def user_enable(settings: Settings, username: str) -> None:
    """Enable a user again (also lifts a sign-in lockout)."""
    cli = _CliAccounts(settings)
    changed = _run(
        lambda: cli.accounts.set_disabled(username, False, actor="cli"),
        cli,
        "user.enable",
        user=username[:64],
    )
    click.echo(f"enabled {changed.username}")


@user.command("passwd")
@settings_options
@click.argument("username")
@_with_password_options
def user_passwd(settings: Settings, username: str, password_stdin: bool, generate: bool) -> None:
    """Set a user's password; their existing sessions end."""
    cli = _CliAccounts(settings)
    _run(lambda: cli.accounts.get(username))
    password, generated = _password(password_stdin, generate)
    changed = _run(
        lambda: cli.accounts.set_password(username, password),
        cli,
        "user.password",
        user=username[:64],
        reset=True,
    )
    click.echo(f"password of {changed.username} changed; their sessions have ended")
    if generated:
        click.echo(f"password (shown once): {password}")
