"""The audit trail of the web side and the CLI: each action leaves exactly the expected row.

Every check takes the rows written since the action began and compares them
(action, outcome, actor kind and name, address, patient, study) with what the
action must write — one row, never two. Then the administrators' page: filters,
CSV export, who may see it; and no password, PIN or token anywhere in the table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from test_share_links import (
    PASSWORD,
    PIN,
    ShareEnv,
    build_env,
    csrf_of,
    login,
    make_link,
    open_link,
    staff,
)

from pacs.audit import AuditRow
from pacs.cli import main as pacs_cli

pytestmark = pytest.mark.integration

A_PATIENT = "24011542"
A_NAME = "LE^VAN HUNG"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShareEnv]:
    built = build_env(tmp_path_factory.mktemp("audit"))
    yield built
    built.archive.index.engine.dispose()


@dataclass(frozen=True)
class Expected:
    action: str
    actor: str
    actor_kind: str = "user"
    outcome: str = "success"
    patient_id: str = ""
    study_uid: str = ""
    address: str | None = None


def rows_during(env: ShareEnv, act: Callable[[], Any]) -> list[AuditRow]:
    """The audit rows written while ``act`` ran, oldest first."""
    before = max((r.id for r in env.archive.audit.query(limit=1)), default=0)
    act()
    rows = [r for r in env.archive.audit.query(limit=500) if r.id > before]
    return sorted(rows, key=lambda r: r.id)


def assert_rows(rows: list[AuditRow], *expected: Expected) -> None:
    assert len(rows) == len(expected), [(r.action, r.actor, r.outcome) for r in rows]
    for row, want in zip(rows, expected, strict=True):
        got = (row.action, row.actor, row.actor_kind, row.outcome)
        assert got == (want.action, want.actor, want.actor_kind, want.outcome), got
        assert row.patient_id == want.patient_id, (row.action, row.patient_id)
        assert row.study_uid == want.study_uid, (row.action, row.study_uid)
        if want.address is not None:
            assert row.address == want.address
        assert row.at.year >= 2024 and row.node


# ---------------------------------------------------------------- signing in and out


def test_sign_in_out_and_failures(env: ShareEnv) -> None:
    client = env.client("10.20.30.40")

    def good() -> None:
        login(client, "rad")

    assert_rows(rows_during(env, good), Expected("login", "rad", address="10.20.30.40"))
    csrf = csrf_of(client.get("/account").get_data(as_text=True))
    assert_rows(
        rows_during(env, lambda: client.post("/logout", data={"csrf_token": csrf})),
        Expected("logout", "rad"),
    )
    other = env.client("10.20.30.41")
    token = csrf_of(other.get("/login").get_data(as_text=True))

    def bad() -> None:
        other.post("/login", data={"username": "RAD2", "password": "wrong!", "csrf_token": token})

    rows = rows_during(env, bad)
    assert_rows(rows, Expected("login", "rad2", outcome="failure", address="10.20.30.41"))
    assert rows[0].details == {"reason": "bad_credentials"}
    # Locked: the refusal is a failure of its own kind.
    env.accounts.create("lockme", PASSWORD, role="radiologist")
    for _ in range(5):
        other.post("/login", data={"username": "lockme", "password": "x", "csrf_token": token})
    locked = rows_during(
        env,
        lambda: other.post(
            "/login", data={"username": "lockme", "password": PASSWORD, "csrf_token": token}
        ),
    )
    assert_rows(locked, Expected("login", "lockme", outcome="failure"))
    assert locked[0].details == {"reason": "locked"}


def test_own_password_change_and_ending_every_session(env: ShareEnv) -> None:
    env.accounts.create("changer", PASSWORD, role="referring")
    client = env.client()
    csrf = login(client, "changer")
    new = "một mật khẩu mới 2025"

    def wrong() -> None:
        client.post(
            "/account/password",
            data={"csrf_token": csrf, "current_password": "nope", "new_password": new,
                  "confirm_password": new},
        )  # fmt: skip

    assert_rows(rows_during(env, wrong), Expected("user.password", "changer", outcome="failure"))

    def right() -> None:
        client.post(
            "/account/password",
            data={"csrf_token": csrf, "current_password": PASSWORD, "new_password": new,
                  "confirm_password": new},
        )  # fmt: skip

    rows = rows_during(env, right)
    assert_rows(rows, Expected("user.password", "changer"))
    csrf = login_with(client, "changer", new)
    rows = rows_during(env, lambda: client.post("/account/sessions", data={"csrf_token": csrf}))
    assert_rows(rows, Expected("logout", "changer"))
    assert rows[0].details == {"everywhere": True}
    for row in env.archive.audit.query(actor="changer", limit=None):
        assert new not in repr(row) and PASSWORD not in repr(row)


def login_with(client: Any, username: str, password: str) -> str:
    token = csrf_of(client.get("/login").get_data(as_text=True))
    client.post("/login", data={"username": username, "password": password, "csrf_token": token})
    return csrf_of(client.get("/account").get_data(as_text=True))


# ---------------------------------------------------------------- reading


def test_searches_opens_and_downloads(env: ShareEnv) -> None:
    rad = staff(env)
    a = env.studies["A"]
    rows = rows_during(env, lambda: rad.client.get(f"/api/studies?patient_id={A_PATIENT}"))
    assert_rows(rows, Expected("worklist.search", "rad", patient_id=A_PATIENT, study_uid=a))
    assert rows[0].details["criteria"] == {"patient_id": A_PATIENT}
    assert rows[0].details["matches"] == 1
    assert rows[0].patient_name == A_NAME
    wide = rows_during(env, lambda: rad.client.get("/api/studies?modality=CT,MR"))
    assert_rows(wide, Expected("worklist.search", "rad"))
    assert wide[0].details["matches"] >= 2
    assert_rows(
        rows_during(env, lambda: rad.client.get(f"/viewer/{a}")),
        Expected("study.open", "rad", patient_id=A_PATIENT, study_uid=a),
    )
    # The viewer's own data and pixel requests are not audited.
    ref = env.refs("A")[0]

    def viewing() -> None:
        rad.client.get(f"/api/studies/{a}")
        rad.client.get(f"/api/series/{ref.series_uid}")
        rad.client.get(f"/api/instances/{ref.sop_uid}/frames/1/rendered")
        rad.client.get(f"/api/frames?f={ref.sop_uid}/1")

    assert rows_during(env, viewing) == []
    assert_rows(
        rows_during(env, lambda: rad.post(f"/api/studies/{a}/opened")),
        Expected("study.open", "rad", patient_id=A_PATIENT, study_uid=a),
    )
    zipped = rows_during(env, lambda: rad.client.get(f"/api/studies/{a}/download.zip").data)
    assert_rows(zipped, Expected("study.download", "rad", patient_id=A_PATIENT, study_uid=a))
    assert zipped[0].details == {"format": "zip", "instances": 24, "deidentified": False}
    image = rows_during(
        env, lambda: rad.client.get(f"/api/instances/{ref.sop_uid}/download?format=jpeg")
    )
    assert_rows(image, Expected("image.download", "rad", patient_id=A_PATIENT, study_uid=a))
    assert image[0].details["sop"] == ref.sop_uid and image[0].details["format"] == "jpeg"


# ---------------------------------------------------------------- sharing


def test_sharing_actions(env: ShareEnv) -> None:
    rad = staff(env)
    a = env.studies["A"]
    made: dict[str, Any] = {}

    def create() -> None:
        made["link"] = make_link(env, who=rad, pin=PIN, download=True)

    rows = rows_during(env, create)
    link = made["link"]
    assert_rows(rows, Expected("share.create", "rad", patient_id=A_PATIENT, study_uid=a))
    assert rows[0].details["link"] == link.id and rows[0].details["protected"] is True
    share_actor = f"link-{link.id}"
    visitor = env.client("192.168.5.6")

    def wrong_pin() -> None:
        visitor.get(link.path)
        csrf = csrf_of(visitor.get("/shared/pin").get_data(as_text=True))
        visitor.post("/shared/pin", data={"pin": "0000", "csrf_token": csrf})

    assert_rows(
        rows_during(env, wrong_pin),
        Expected("share.pin", share_actor, "share", "failure", A_PATIENT, a, "192.168.5.6"),
    )

    def right_pin() -> None:
        csrf = csrf_of(visitor.get("/shared/pin").get_data(as_text=True))
        visitor.post("/shared/pin", data={"pin": PIN, "csrf_token": csrf})

    assert_rows(
        rows_during(env, right_pin),
        Expected("share.open", share_actor, "share", "success", A_PATIENT, a, "192.168.5.6"),
    )
    assert_rows(
        rows_during(env, lambda: visitor.get(f"/viewer/{a}")),
        Expected("study.open", share_actor, "share", patient_id=A_PATIENT, study_uid=a),
    )
    assert_rows(
        rows_during(env, lambda: visitor.get(f"/api/studies/{a}/download.zip").data),
        Expected("study.download", share_actor, "share", patient_id=A_PATIENT, study_uid=a),
    )
    assert_rows(
        rows_during(env, lambda: rad.post(f"/api/shares/{link.id}/revoke")),
        Expected("share.revoke", "rad", patient_id=A_PATIENT, study_uid=a),
    )
    refused = rows_during(env, lambda: env.client().get(link.path))
    assert_rows(refused, Expected("share.open", share_actor, "share", "failure", A_PATIENT, a))
    assert refused[0].details["reason"] == "revoked"
    unknown = rows_during(env, lambda: env.client().get("/s/" + "Q" * 43))
    assert_rows(unknown, Expected("share.open", "link-unknown", "share", "failure"))
    # Sharing with an account, and taking it back.
    assert_rows(
        rows_during(env, lambda: rad.post(f"/api/studies/{a}/shares", {"username": "ref"})),
        Expected("share.create", "rad", patient_id=A_PATIENT, study_uid=a),
    )
    assert_rows(
        rows_during(env, lambda: rad.delete(f"/api/studies/{a}/shares/accounts/ref")),
        Expected("share.revoke", "rad", patient_id=A_PATIENT, study_uid=a),
    )


def test_expired_and_locked_opens(env: ShareEnv) -> None:
    a = env.studies["A"]
    link = make_link(env)
    env.set_link(link.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    rows = rows_during(env, lambda: env.client().get(link.path))
    assert_rows(rows, Expected("share.open", f"link-{link.id}", "share", "failure", A_PATIENT, a))
    assert rows[0].details["reason"] == "expired"
    locked = make_link(env, pin=PIN)
    env.set_link(locked.id, pin_locked_until=datetime.now(UTC) + timedelta(minutes=5))
    rows = rows_during(env, lambda: env.client().get(locked.path))
    assert rows[0].details["reason"] == "locked" and len(rows) == 1


def test_key_images_and_result_sheets(env: ShareEnv) -> None:
    rad = staff(env)
    b = env.studies["B"]
    ref = env.refs("B")[3]
    url = f"/api/studies/{b}/key-images"
    rows = rows_during(env, lambda: rad.post(url, {"sop_uid": ref.sop_uid, "frame": 1}))
    assert_rows(rows, Expected("study.key_image", "rad", patient_id="24003817", study_uid=b))
    assert rows[0].details == {"sop": ref.sop_uid, "frame": 1, "chosen": True}
    assert_rows(
        rows_during(env, lambda: rad.client.get(f"/studies/{b}/sheet")),
        Expected("study.result_sheet", "rad", patient_id="24003817", study_uid=b),
    )
    assert_rows(
        rows_during(env, lambda: rad.delete(f"{url}?sop_uid={ref.sop_uid}&frame=1")),
        Expected("study.key_image", "rad", patient_id="24003817", study_uid=b),
    )


# ---------------------------------------------------------------- users and AEs


def test_user_changes_on_the_admin_page(env: ShareEnv) -> None:
    admin = staff(env, "admin")

    def post(url: str, **form: str) -> None:
        admin.client.post(url, data={"csrf_token": admin.csrf, **form})

    rows = rows_during(
        env, lambda: post("/admin/users", username="newdoc", role="referring", password=PASSWORD)
    )
    assert_rows(rows, Expected("user.create", "admin"))
    assert rows[0].details == {"user": "newdoc", "role": "referring"}
    for action, form, detail in (
        ("disable", {}, {"user": "newdoc"}),
        ("enable", {}, {"user": "newdoc"}),
        ("role", {"role": "radiologist"}, {"user": "newdoc", "role": "radiologist"}),
        ("password", {}, {"user": "newdoc", "reset": True}),
    ):
        rows = rows_during(env, lambda a=action, f=form: post(f"/admin/users/newdoc/{a}", **f))
        assert_rows(rows, Expected(f"user.{action}", "admin"))
        assert rows[0].details == detail
    # Refused changes are failures.
    rows = rows_during(env, lambda: post("/admin/users/admin/disable"))
    assert_rows(rows, Expected("user.disable", "admin", outcome="failure"))
    assert rows[0].details["reason"] == "last_admin"
    rows = rows_during(env, lambda: post("/admin/users", username="newdoc", role="referring"))
    assert_rows(rows, Expected("user.create", "admin", outcome="failure"))


def test_user_changes_from_the_command_line(env: ShareEnv) -> None:
    from pacs.cli_users import user

    runner = CliRunner(env={"PACS_SECRET_KEY": None})
    data_dir = str(env.settings.data_dir)

    def run(*args: str, stdin: str | None = None) -> None:
        result = runner.invoke(user, [*args, "--data-dir", data_dir], input=stdin)
        assert result.exit_code == 0, result.output

    rows = rows_during(
        env,
        lambda: run(
            "add", "clidoc", "--role", "referring", "--password-stdin", stdin=PASSWORD + "\n"
        ),
    )
    assert_rows(rows, Expected("user.create", rows[0].actor, "cli"))
    assert rows[0].address == "local" and rows[0].details == {"user": "clidoc", "role": "referring"}
    assert_rows(
        rows_during(env, lambda: run("disable", "clidoc")),
        Expected("user.disable", rows[0].actor, "cli"),
    )
    assert_rows(
        rows_during(env, lambda: run("enable", "clidoc")),
        Expected("user.enable", rows[0].actor, "cli"),
    )
    rows = rows_during(env, lambda: run("passwd", "clidoc", "--generate"))
    assert_rows(rows, Expected("user.password", rows[0].actor, "cli"))
    failed = rows_during(
        env, lambda: runner.invoke(user, ["disable", "nobody-here", "--data-dir", data_dir])
    )
    assert failed == [] or failed[0].outcome == "failure"


def test_ae_changes_from_the_command_line(env: ShareEnv) -> None:
    runner = CliRunner()
    data_dir = str(env.settings.data_dir)
    rows = rows_during(
        env,
        lambda: runner.invoke(
            pacs_cli,
            ["ae", "add", "CT_PHONG2", "10.0.0.9", "104", "--no-retrieve", "--data-dir", data_dir],
        ),
    )
    assert_rows(rows, Expected("ae.add", rows[0].actor, "cli"))
    assert rows[0].details["ae_title"] == "CT_PHONG2" and rows[0].details["retrieve"] is False
    rows = rows_during(
        env, lambda: runner.invoke(pacs_cli, ["ae", "remove", "CT_PHONG2", "--data-dir", data_dir])
    )
    assert_rows(rows, Expected("ae.remove", rows[0].actor, "cli"))


# ---------------------------------------------------------------- the administrators' page


def test_the_audit_page_filters_and_exports(env: ShareEnv) -> None:
    rad = staff(env)
    rad.client.get(f"/viewer/{env.studies['A']}")
    rad.client.get(f"/viewer/{env.studies['B']}")
    admin = staff(env, "admin")
    page = admin.client.get("/admin/audit?user=rad&action=study.*")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "study.open" in html and "login" not in html.split("<tbody>", 1)[1].split("</tbody>")[0]
    by_patient = admin.client.get(f"/admin/audit?patient={A_PATIENT}").get_data(as_text=True)
    body = by_patient.split("<tbody>", 1)[1]
    assert A_PATIENT in body and "24003817" not in body
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
    assert "study.open" in admin.client.get(
        f"/admin/audit?date_from={today}&date_to={today}"
    ).get_data(as_text=True)
    empty = admin.client.get(f"/admin/audit?date_from={tomorrow}").get_data(as_text=True)
    assert 'colspan="8"' in empty

    def export() -> Any:
        return admin.client.get(f"/admin/audit.csv?user=rad&patient={A_PATIENT}")

    made: dict[str, Any] = {}
    rows = rows_during(env, lambda: made.setdefault("csv", export()))
    assert_rows(rows, Expected("audit.export", "admin"))
    response = made["csv"]
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    table = list(csv.DictReader(io.StringIO(response.get_data(as_text=True).lstrip("\ufeff"))))
    assert table and all(r["actor"] == "rad" and r["patient_id"] == A_PATIENT for r in table)
    assert {"at", "action", "outcome", "address", "patient_name", "study_uid"} <= set(table[0])


def test_only_administrators_see_the_trail(env: ShareEnv) -> None:
    for username in ("rad", "ref"):
        client = staff(env, username).client
        assert client.get("/admin/audit").status_code == 403
        assert client.get("/admin/audit.csv").status_code == 403
    nav = staff(env, "admin").client.get("/worklist").get_data(as_text=True)
    assert 'data-nav="admin_audit.audit_page"' in nav and 'data-nav="share_api.shares_page"' in nav
    rad_nav = staff(env, "rad").client.get("/worklist").get_data(as_text=True)
    assert 'data-nav="admin_audit.audit_page"' not in rad_nav
    assert 'data-nav="share_api.shares_page"' in rad_nav
    ref_nav = staff(env, "ref").client.get("/worklist").get_data(as_text=True)
    assert 'data-nav="share_api.shares_page"' not in ref_nav


def test_no_secret_is_ever_stored(env: ShareEnv) -> None:
    link = make_link(env, pin=PIN)
    open_link(env, link, pin=PIN)
    client = env.client()
    token = csrf_of(client.get("/login").get_data(as_text=True))
    client.post(
        "/login", data={"username": "rad", "password": "my-secret-guess", "csrf_token": token}
    )
    everything = repr(env.archive.audit.query(limit=None))
    for secret in (PASSWORD, PIN, link.token, "my-secret-guess"):
        assert secret not in everything
