"""Accounts: password hashing, sign-in lockout, session versions, assignments, first admin."""

from __future__ import annotations

import io
import logging
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pacs.dicomfile import InstanceHeader
from pacs.storage.accounts import AccountStore, utcnow
from pacs.storage.database import ensure_schema, make_engine
from pacs.viewer.users import (
    AccountError,
    Accounts,
    BadCredentials,
    LockedOut,
    LoginPolicy,
    ensure_first_admin,
)

PASSWORD = "correct horse battery"


def fake_header(study_uid: str) -> InstanceHeader:
    """The index entry of a one-instance study (no file behind it)."""
    return InstanceHeader(
        sop_instance_uid=study_uid + ".1.1",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid=study_uid,
        series_instance_uid=study_uid + ".1",
        patient_id="P1",
        issuer_of_patient_id="",
        patient_name="Nguyễn^Văn A",
        patient_birth_date="",
        patient_sex="M",
        study_date="20240101",
        study_time="",
        accession_number="",
        study_id="",
        study_description="",
        referring_physician="",
        institution="",
        modality="CT",
        series_number=1,
        series_description="",
        body_part="",
        series_date="",
        series_time="",
        station_name="",
        instance_number=1,
        rows=None,
        columns=None,
        frames=None,
        bits_allocated=None,
        specific_character_set="ISO_IR 192",
        repaired_codec=None,
        dataset_offset=0,
    )


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'index.sqlite'}")
    ensure_schema(engine, auto_migrate=True)
    return engine


@pytest.fixture
def accounts(engine: Engine) -> Accounts:
    return Accounts(engine, LoginPolicy(max_failures=3, max_address_failures=6))


def test_passwords_are_stored_as_scrypt_hashes(accounts: Accounts) -> None:
    user = accounts.create("Lan.Nguyen", PASSWORD, role="radiologist", display_name="Nguyễn Lan")
    assert user.username == "lan.nguyen"  # normalised
    assert user.password_hash.startswith("scrypt:")
    assert PASSWORD not in user.password_hash
    assert accounts.authenticate("LAN.NGUYEN", PASSWORD, "10.0.0.1").id == user.id


@pytest.mark.parametrize(
    ("username", "password", "code"),
    [
        ("a", PASSWORD, "bad_username"),
        ("with space", PASSWORD, "bad_username"),
        ("<script>", PASSWORD, "bad_username"),
        ("fine", "short", "weak_password"),
    ],
)
def test_bad_usernames_and_weak_passwords_are_refused(
    accounts: Accounts, username: str, password: str, code: str
) -> None:
    with pytest.raises(AccountError) as info:
        accounts.create(username, password, role="referring")
    assert info.value.code == code


def test_a_username_is_taken_once(accounts: Accounts) -> None:
    accounts.create("minh", PASSWORD, role="referring")
    with pytest.raises(AccountError) as info:
        accounts.create("MINH", PASSWORD, role="admin")
    assert info.value.code == "taken"


def test_unknown_role_is_refused(accounts: Accounts) -> None:
    with pytest.raises(AccountError) as info:
        accounts.create("minh", PASSWORD, role="superuser")
    assert info.value.code == "bad_role"


def test_repeated_wrong_passwords_lock_the_account(accounts: Accounts) -> None:
    accounts.create("hoa", PASSWORD, role="radiologist")
    for _ in range(3):
        with pytest.raises(BadCredentials):
            accounts.authenticate("hoa", "wrong password", "10.0.0.2")
    # Locked: even the right password is refused now.
    with pytest.raises(LockedOut) as info:
        accounts.authenticate("hoa", PASSWORD, "10.0.0.3")
    assert info.value.until > utcnow()
    # An administrator enabling the account lifts the lock.
    accounts.set_disabled("hoa", False)
    assert accounts.authenticate("hoa", PASSWORD, "10.0.0.3").username == "hoa"


def test_a_success_resets_the_failure_count(accounts: Accounts) -> None:
    accounts.create("hoa", PASSWORD, role="radiologist")
    for _ in range(2):
        with pytest.raises(BadCredentials):
            accounts.authenticate("hoa", "nope nope", "10.0.0.2")
    accounts.authenticate("hoa", PASSWORD, "10.0.0.2")
    for _ in range(2):
        with pytest.raises(BadCredentials):
            accounts.authenticate("hoa", "nope nope", "10.0.0.2")
    assert accounts.authenticate("hoa", PASSWORD, "10.0.0.2").username == "hoa"


def test_unknown_usernames_lock_like_known_ones(accounts: Accounts) -> None:
    for _ in range(3):
        with pytest.raises(BadCredentials):
            accounts.authenticate("nobody", "whatever1", "10.0.0.4")
    with pytest.raises(LockedOut):
        accounts.authenticate("nobody", "whatever1", "10.0.0.4")


def test_an_address_guessing_many_usernames_is_blocked(accounts: Accounts) -> None:
    accounts.create("real", PASSWORD, role="radiologist")
    for i in range(6):
        with pytest.raises(BadCredentials):
            accounts.authenticate(f"guess{i}", "whatever1", "10.9.9.9")
    with pytest.raises(LockedOut):
        accounts.authenticate("real", PASSWORD, "10.9.9.9")
    # The same account from another address is fine.
    assert accounts.authenticate("real", PASSWORD, "10.0.0.5").username == "real"


def test_failures_older_than_the_window_do_not_count(engine: Engine) -> None:
    accounts = Accounts(engine, LoginPolicy(max_failures=2, window=timedelta(milliseconds=1)))
    accounts.create("old", PASSWORD, role="radiologist")
    for _ in range(3):
        with pytest.raises(BadCredentials):
            accounts.authenticate("old", "wrong one", "10.0.0.6")
    assert accounts.authenticate("old", PASSWORD, "10.0.0.6").username == "old"


def test_a_disabled_user_cannot_sign_in(accounts: Accounts) -> None:
    accounts.create("admin1", PASSWORD, role="admin")
    accounts.create("gone", PASSWORD, role="referring")
    accounts.set_disabled("gone", True)
    with pytest.raises(BadCredentials):
        accounts.authenticate("gone", PASSWORD, "10.0.0.7")


def test_disabling_changing_password_or_role_ends_sessions(accounts: Accounts) -> None:
    accounts.create("admin1", PASSWORD, role="admin")
    user = accounts.create("tuan", PASSWORD, role="radiologist")
    versions = [user.session_version]
    accounts.set_password("tuan", "another password")
    versions.append(accounts.get("tuan").session_version)
    accounts.set_role("tuan", "referring")
    versions.append(accounts.get("tuan").session_version)
    accounts.set_disabled("tuan", True)
    versions.append(accounts.get("tuan").session_version)
    accounts.store.end_sessions(user.id)
    versions.append(accounts.get("tuan").session_version)
    assert versions == sorted(set(versions)), "every change must bump the session version"


def test_the_last_administrator_cannot_be_disabled_or_demoted(accounts: Accounts) -> None:
    accounts.create("boss", PASSWORD, role="admin")
    for action in (
        lambda: accounts.set_disabled("boss", True),
        lambda: accounts.set_role("boss", "radiologist"),
    ):
        with pytest.raises(AccountError) as info:
            action()
        assert info.value.code == "last_admin"
    accounts.create("boss2", PASSWORD, role="admin")
    accounts.set_disabled("boss", True)
    assert accounts.get("boss").disabled


def test_changing_ones_own_password_checks_the_current_one(accounts: Accounts) -> None:
    user = accounts.create("linh", PASSWORD, role="radiologist")
    with pytest.raises(AccountError) as info:
        accounts.change_own_password(user, "not it at all", "new password 1")
    assert info.value.code == "bad_current_password"
    accounts.change_own_password(user, PASSWORD, "new password 1")
    assert accounts.authenticate("linh", "new password 1", "10.0.0.8").id == user.id


def test_assignments_scope_a_referring_doctor(engine: Engine, accounts: Accounts) -> None:
    from pacs.storage.index import SqlIndex

    index = SqlIndex(engine)
    for uid in ("1.2.3.1", "1.2.3.2"):
        index.record_instance(
            fake_header(uid),
            object_key=f"k/{uid}",
            size_bytes=1,
            sha256="0" * 64,
            source_ae="",
            intent_id=None,
        )
    pks = index.study_pks(["1.2.3.1", "1.2.3.2"])
    doctor = accounts.create("bsvinh", PASSWORD, role="referring")
    store = accounts.store
    assert store.visible_study_pks(doctor.id) == frozenset()
    assert store.assign(doctor.id, "1.2.3.1", by_user_id=None)
    assert not store.assign(doctor.id, "1.2.3.1", by_user_id=None)  # already
    # Assigned but not (yet) archived: nothing to see, nothing leaks.
    store.assign(doctor.id, "9.9.9", by_user_id=None)
    # A share that has expired no longer counts.
    store.assign(
        doctor.id, "1.2.3.2", by_user_id=None, kind="shared", expires_at=utcnow() - timedelta(1)
    )
    assert store.visible_study_pks(doctor.id) == frozenset({pks["1.2.3.1"]})
    assert [a.study_uid for a in store.assignments(["1.2.3.1"])] == ["1.2.3.1"]
    assert store.unassign(doctor.id, "1.2.3.1")
    assert store.visible_study_pks(doctor.id) == frozenset()


def test_study_views_remember_what_a_user_opened(accounts: Accounts) -> None:
    user = accounts.create("thu", PASSWORD, role="radiologist")
    store = accounts.store
    store.mark_opened(user.id, "1.2.3")
    store.mark_opened(user.id, "1.2.3")
    assert set(store.opened(user.id, ["1.2.3", "4.5.6"])) == {"1.2.3"}


def test_first_admin_is_created_once_and_its_password_never_logged(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    out = io.StringIO()
    with caplog.at_level(logging.DEBUG):
        created = ensure_first_admin(engine, url="http://127.0.0.1:8080", out=out)
    assert created is not None
    username, password = created
    printed = out.getvalue()
    assert password in printed and "http://127.0.0.1:8080/login" in printed
    assert password not in caplog.text
    accounts = Accounts(engine)
    assert accounts.authenticate(username, password, "127.0.0.1").role == "admin"
    assert ensure_first_admin(engine, out=io.StringIO()) is None


def test_first_admin_accepts_the_archive(tmp_path: Path) -> None:
    from pacs.bootstrap import build_archive
    from pacs.config import Settings

    archive = build_archive(Settings(data_dir=tmp_path))
    assert ensure_first_admin(archive, out=io.StringIO()) is not None
    assert AccountStore(archive.index.engine).count_admins() == 1
