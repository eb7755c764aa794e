"""``pacs token``: API tokens for partner systems (DICOMweb), and the browser origins
allowed to call DICOMweb (CORS).

Registered in :mod:`pacs.cli` with ``main.add_command(token)``. A new token is
printed once; only its SHA-256 is stored, so a lost token is revoked and
replaced, never recovered.

    pacs token add "BV Trung Uong Hue" --study 1.2.840... --study 1.2.840...
    pacs token add ohif --all --expires 365
    pacs token list
    pacs token revoke "BV Trung Uong Hue"
    pacs token cors add https://viewer.benhvien.vn
"""

from __future__ import annotations

import json
from typing import Any

import click

from pacs.cli_common import open_archive, settings_options
from pacs.config import Settings
from pacs.errors import PacsError


def _engine(settings: Settings) -> Any:
    return open_archive(settings).index.engine


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


@click.group()
def token() -> None:
    """API tokens for partner systems and viewers (DICOMweb) / Mã truy cập cho hệ thống đối tác."""


@token.command("add")
@settings_options
@click.argument("name")
@click.option(
    "--study",
    "studies",
    multiple=True,
    metavar="UID",
    help="A Study Instance UID the token may see (repeat for several).",
)
@click.option("--all", "all_studies", is_flag=True, help="The token may see every study.")
@click.option("--write", is_flag=True, help="The token may also store (STOW-RS).")
@click.option("--expires", type=float, metavar="DAYS", help="Expire after this many days.")
@click.option("--description", default="", help="Free text, e.g. who uses it.")
def token_add(
    settings: Settings,
    name: str,
    studies: tuple[str, ...],
    all_studies: bool,
    write: bool,
    expires: float | None,
    description: str,
) -> None:
    """Create a token and print it once / Tạo mã (chỉ hiển thị một lần)."""
    from pacs.storage.dicomweb_models import TokenNameTaken, TokenStore
    from pacs.viewer.dicomweb.tokens import InvalidTokenRequest, create_token

    store = TokenStore(_engine(settings))
    try:
        created = create_token(
            store,
            name,
            study_uids=list(studies),
            all_studies=all_studies,
            can_write=write,
            expires_days=expires,
            created_by="cli",
            description=description,
        )
    except InvalidTokenRequest as exc:
        raise click.UsageError(str(exc)) from exc
    except TokenNameTaken as exc:
        raise click.ClickException(
            f"an active token is already named {exc.args[0]!r} / tên này đã được dùng"
        ) from exc
    except PacsError as exc:
        raise click.ClickException(exc.reason) from exc
    archived = store.archived_study_uids(studies)
    missing = [uid for uid in studies if uid not in archived]
    scope = "all studies / mọi ca chụp" if all_studies else f"{len(studies)} study(ies) / ca chụp"
    click.echo(f"Token #{created.token.id} {created.token.name!r}: {scope}")
    if missing:
        click.echo(
            f"Note / Lưu ý: {len(missing)} of these studies are not archived yet; the token "
            "will see them once they arrive.",
            err=True,
        )
    click.echo("Copy it now, it will not be shown again / Hãy sao chép ngay, mã sẽ không hiện lại:")
    click.echo(created.secret)


@token.command("list")
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--active", is_flag=True, help="Only tokens that still work.")
def token_list(settings: Settings, as_json: bool, active: bool) -> None:
    """List tokens (never their secrets) / Danh sách mã."""
    from pacs.storage.dicomweb_models import TokenStore
    from pacs.viewer.dicomweb.tokens import token_json

    try:
        tokens = TokenStore(_engine(settings)).list_tokens()
    except PacsError as exc:
        raise click.ClickException(exc.reason) from exc
    if active:
        tokens = [t for t in tokens if t.is_active()]
    if as_json:
        click.echo(json.dumps([token_json(t) for t in tokens], indent=2, ensure_ascii=False))
        return
    if not tokens:
        click.echo("No tokens / Chưa có mã nào.")
        return
    click.echo(
        f"{'ID':>4}  {'NAME':<24} {'PREFIX':<14} {'SCOPE':<14} {'WRITE':<5} "
        f"{'EXPIRES':<16} {'LAST USED':<16} STATE"
    )
    for t in tokens:
        scope = "all" if t.all_studies else f"{len(t.study_uids())} study(ies)"
        state = "revoked" if t.revoked_at else ("active" if t.is_active() else "expired")
        click.echo(
            f"{t.id:>4}  {t.name[:24]:<24} {t.token_prefix:<14} {scope:<14} "
            f"{'yes' if t.can_write else 'no':<5} {_when(t.expires_at):<16} "
            f"{_when(t.last_used_at):<16} {state}"
        )


@token.command("revoke")
@settings_options
@click.argument("name_or_id")
def token_revoke(settings: Settings, name_or_id: str) -> None:
    """Revoke a token by name or id, at once on every server / Thu hồi mã."""
    from pacs.storage.dicomweb_models import TokenStore

    store = TokenStore(_engine(settings))
    try:
        if name_or_id.isdigit() and store.get(int(name_or_id)) is not None:
            targets = [store.get(int(name_or_id))]
        else:
            targets = [t for t in store.by_name(name_or_id) if t.revoked_at is None]
        targets = [t for t in targets if t is not None]
        if not targets:
            raise click.ClickException(
                f"no active token named {name_or_id!r} / không tìm thấy mã này"
            )
        for t in targets:
            if store.revoke(t.id):
                click.echo(f"Revoked / Đã thu hồi: #{t.id} {t.name!r} ({t.token_prefix}…)")
            else:
                click.echo(f"Already revoked / Đã thu hồi trước đó: #{t.id} {t.name!r}")
    except PacsError as exc:
        raise click.ClickException(exc.reason) from exc


@token.group("cors")
def cors_group() -> None:
    """Browser origins allowed to call DICOMweb (e.g. an OHIF viewer) / Nguồn trình duyệt."""


@cors_group.command("add")
@settings_options
@click.argument("origin")
def cors_add(settings: Settings, origin: str) -> None:
    """Allow ORIGIN (https://host[:port], or * for any)."""
    from pacs.storage.dicomweb_models import CorsStore
    from pacs.viewer.dicomweb.cors import normalise_origin

    try:
        origin = normalise_origin(origin)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    added = CorsStore(_engine(settings)).add(origin)
    click.echo(f"{'Allowed' if added else 'Already allowed'} / Đã cho phép: {origin}")


@cors_group.command("list")
@settings_options
def cors_list(settings: Settings) -> None:
    """List allowed origins."""
    from pacs.storage.dicomweb_models import CorsStore

    origins = CorsStore(_engine(settings)).origins()
    for origin in origins:
        click.echo(origin)
    if not origins:
        click.echo("No origin allowed / Chưa cho phép nguồn nào.", err=True)


@cors_group.command("remove")
@settings_options
@click.argument("origin")
def cors_remove(settings: Settings, origin: str) -> None:
    """Stop allowing ORIGIN."""
    from pacs.storage.dicomweb_models import CorsStore
    from pacs.viewer.dicomweb.cors import normalise_origin

    try:
        origin = normalise_origin(origin)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc
    if not CorsStore(_engine(settings)).remove(origin):
        raise click.ClickException(f"{origin} was not allowed / nguồn này chưa được cho phép")
    click.echo(f"Removed / Đã gỡ: {origin}")
