"""``pacs user add|list|disable|enable|passwd`` through click's CliRunner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from pacs.cli_users import user
from pacs.config import Settings
from pacs.storage.database import make_engine
from pacs.viewer.users import Accounts, BadCredentials

PASSWORD = "mật khẩu dài 123"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def run(data_dir: Path, *args: str, input: str | None = None) -> Result:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith("PACS_")}
    command, *rest = args
    return CliRunner(env=unset).invoke(
        user, [command, "--data-dir", str(data_dir), *rest], input=input, catch_exceptions=False
    )


def accounts(data_dir: Path) -> Accounts:
    return Accounts(make_engine(Settings(data_dir=data_dir.resolve()).effective_database_url))


def test_add_prompts_twice_and_stores_a_hash(data_dir: Path) -> None:
    result = run(
        data_dir,
        "add",
        "bs.lan",
        "--role",
        "radiologist",
        "--name",
        "Nguyễn Thị Lan",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert "created bs.lan (radiologist)" in result.output
    created = accounts(data_dir).get("bs.lan")
    assert created.display_name == "Nguyễn Thị Lan"
    assert created.password_hash.startswith("scrypt:")
    assert accounts(data_dir).authenticate("bs.lan", PASSWORD, "127.0.0.1").id == created.id


def test_add_with_a_generated_password_prints_it_once(data_dir: Path) -> None:
    result = run(data_dir, "add", "admin", "--role", "admin", "--generate")
    assert result.exit_code == 0, result.output
    password = result.output.split("password (shown once): ")[1].strip()
    assert accounts(data_dir).authenticate("admin", password, "127.0.0.1").role == "admin"


def test_add_refuses_duplicates_and_weak_passwords(data_dir: Path) -> None:
    assert run(data_dir, "add", "x1", "--role", "referring", "--generate").exit_code == 0
    taken = run(data_dir, "add", "X1", "--role", "referring", "--generate")
    assert taken.exit_code != 0 and "already exists" in taken.output
    weak = run(data_dir, "add", "x2", "--role", "referring", "--password-stdin", input="short\n")
    assert weak.exit_code != 0 and "at least 8" in weak.output
    bad_role = run(data_dir, "add", "x3", "--role", "boss", "--generate")
    assert bad_role.exit_code != 0


def test_list_disable_enable_passwd(data_dir: Path) -> None:
    run(data_dir, "add", "boss", "--role", "admin", "--generate")
    run(data_dir, "add", "bs.vinh", "--role", "referring", "--password-stdin", input=PASSWORD)
    listing = run(data_dir, "list")
    assert listing.exit_code == 0
    assert "bs.vinh" in listing.output and "referring" in listing.output
    assert "never" in listing.output

    assert run(data_dir, "disable", "bs.vinh").exit_code == 0
    assert "disabled" in run(data_dir, "list").output
    with pytest.raises(BadCredentials):
        accounts(data_dir).authenticate("bs.vinh", PASSWORD, "127.0.0.1")
    assert run(data_dir, "enable", "bs.vinh").exit_code == 0
    assert accounts(data_dir).authenticate("bs.vinh", PASSWORD, "127.0.0.1")

    new = "một mật khẩu mới"
    changed = run(data_dir, "passwd", "bs.vinh", input=f"{new}\n{new}\n")
    assert changed.exit_code == 0, changed.output
    assert accounts(data_dir).authenticate("bs.vinh", new, "127.0.0.1")
    with pytest.raises(BadCredentials):
        accounts(data_dir).authenticate("bs.vinh", PASSWORD, "127.0.0.1")


def test_unknown_user_and_last_admin(data_dir: Path) -> None:
    run(data_dir, "add", "boss", "--role", "admin", "--generate")
    missing = run(data_dir, "disable", "ghost")
    assert missing.exit_code != 0 and "no user" in missing.output
    last = run(data_dir, "disable", "boss")
    assert last.exit_code != 0 and "last enabled administrator" in last.output


def test_list_without_users(data_dir: Path) -> None:
    result = run(data_dir, "list")
    assert result.exit_code == 0
    assert "no users yet" in result.output
