"""The ``pacs`` command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

# Only light imports here: `pacs serve`'s supervisor process runs this module,
# and everything it imports is memory every worker would carry twice.
from pacs.cli_common import open_archive, settings_options
from pacs.config import Settings, settings_to_dict
from pacs.errors import PacsError

SECRET_SETTINGS = {"s3_secret_key", "secret_key", "database_url"}


@click.group()
@click.version_option(package_name="pacs")
def main() -> None:
    """pacs: a lightweight PACS — DICOM archive, web viewer and sharing."""


# ---------------------------------------------------------------- serve


@main.command()
@settings_options
@click.option("--host", help="Address to listen on (default 0.0.0.0).")
@click.option("--ae-title", help="Our AE title (default PACS).")
@click.option("--dicom-port", type=int, help="DICOM port (default 11112).")
@click.option("--http-port", type=int, help="Web port (default 8080).")
@click.option("--workers", type=int, help="Worker processes (default: one per core).")
@click.option(
    "--samples",
    type=click.Path(path_type=Path, exists=True, file_okay=False),
    help="Load the studies in this folder when the archive is empty.",
)
@click.option("--no-web", is_flag=True, help="DICOM only.")
def serve(settings: Settings, samples: Path | None, no_web: bool, **flags: Any) -> None:
    """Run the DICOM services and the web server until SIGTERM/SIGINT."""
    from pacs.server import serve as run

    settings = settings.with_overrides(**flags)
    try:
        sys.exit(run(settings, samples=samples, web=not no_web))
    except PacsError as exc:
        raise click.ClickException(exc.reason) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc


# ---------------------------------------------------------------- import


@main.command("import")
@settings_options
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def import_cmd(settings: Settings, paths: tuple[Path, ...], quiet: bool) -> None:
    """Import DICOM files, folders and zip files. Exits 1 if any file was refused."""
    from pacs.importer import candidates, import_paths

    archive = open_archive(settings)
    items = candidates(paths)
    with click.progressbar(
        length=len(items),
        label="Importing",
        file=sys.stderr,
        hidden=quiet,
        show_pos=True,
        show_eta=True,
    ) as bar:
        summary = import_paths(archive, paths, items=items, progress=lambda _: bar.update(1))
    click.echo(
        f"{summary.total} file(s): {summary.stored} stored, {summary.duplicates} duplicate(s), "
        f"{summary.replaced} replaced, {summary.kept_existing} kept the archived version, "
        f"{summary.skipped} skipped (not DICOM), {len(summary.refused)} refused"
    )
    if summary.refused:
        click.echo("Refused:")
        for name, reason in summary.refused:
            click.echo(f"  {name}: {reason}")
        sys.exit(1)


# ---------------------------------------------------------------- ae


@main.group()
def ae() -> None:
    """Remote DICOM nodes: who may store, query, retrieve, and receive moves."""


@ae.command("add")
@settings_options
@click.argument("ae_title")
@click.argument("host")
@click.argument("port", type=int)
@click.option("--store/--no-store", default=True, help="May send (C-STORE) to us.")
@click.option("--query/--no-query", default=True, help="May query (C-FIND).")
@click.option("--retrieve/--no-retrieve", default=True, help="May retrieve (C-MOVE, C-GET).")
@click.option("--destination/--no-destination", default=True, help="May receive C-MOVEs.")
@click.option("--description", default="", help="Free text, e.g. 'CT phòng 2'.")
def ae_add(settings: Settings, ae_title: str, host: str, port: int, **perms: Any) -> None:
    """Enrol or update a remote AE."""
    from pacs.storage.index import RemoteNode

    title = ae_title.strip()
    if not 0 < len(title) <= 16 or "\\" in title or not title.isprintable():
        raise click.BadParameter("an AE title is 1–16 printable characters without '\\'")
    if not 0 < port < 65536:
        raise click.BadParameter("port must be 1–65535")
    node = RemoteNode(
        ae_title=title,
        host=host,
        port=port,
        can_store=perms["store"],
        can_query=perms["query"],
        can_retrieve=perms["retrieve"],
        is_destination=perms["destination"],
        description=perms["description"],
    )
    from pacs.cli_users import cli_actor

    archive = open_archive(settings)
    created = archive.save_node(node)
    archive.audit.record(
        "ae.add",
        cli_actor(),
        details={
            "ae_title": title,
            "host": host,
            "port": port,
            "created": created,
            **perms,
        },
    )
    click.echo(f"{'added' if created else 'updated'} {title} ({host}:{port})")


@ae.command("list")
@settings_options
def ae_list(settings: Settings) -> None:
    """List enrolled AEs."""
    nodes = open_archive(settings).nodes()
    if not nodes:
        click.echo("no remote AEs enrolled (pacs ae add TITLE HOST PORT)")
        return
    click.echo(f"{'AE title':16}  {'address':28}  store query retrieve dest  last contact")
    for n in nodes:
        flags = "  ".join(
            "yes" if v else "no "
            for v in (n.can_store, n.can_query, n.can_retrieve, n.is_destination)
        )
        seen = n.last_seen_at.strftime("%Y-%m-%d %H:%M") if n.last_seen_at else "never"
        click.echo(f"{n.ae_title:16}  {f'{n.host}:{n.port}':28}  {flags}  {seen}")


@ae.command("remove")
@settings_options
@click.argument("ae_title")
def ae_remove(settings: Settings, ae_title: str) -> None:
    """Remove an enrolled AE."""
    from pacs.cli_users import cli_actor

    archive = open_archive(settings)
    try:
        archive.remove_node(ae_title.strip())
    except PacsError as exc:
        archive.audit.record(
            "ae.remove",
            cli_actor(),
            outcome="failure",
            details={"ae_title": ae_title.strip(), "reason": exc.reason},
        )
        raise click.ClickException(exc.reason) from exc
    archive.audit.record("ae.remove", cli_actor(), details={"ae_title": ae_title.strip()})
    click.echo(f"removed {ae_title}")


# ---------------------------------------------------------------- maintenance


@main.command()
@settings_options
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def reindex(settings: Settings, yes: bool) -> None:
    """Rebuild the index from the object store alone."""
    if not yes:
        click.confirm("Wipe the archive index and rebuild it from the object store?", abort=True)
    archive = open_archive(settings)
    counts = archive.reindex(
        progress=lambda n: (
            click.echo(f"\r{n} indexed", nl=False, err=True) if n % 100 == 0 else None
        )
    )
    click.echo(
        f"\nreindexed {counts['indexed']} instance(s); {counts['invalid']} invalid object(s)"
    )


@main.command()
@settings_options
@click.option("--no-checksums", is_flag=True, help="Only check that objects exist.")
def verify(settings: Settings, no_checksums: bool) -> None:
    """Check every indexed object exists with its checksum, and list orphans."""
    report = open_archive(settings).verify(checksums=not no_checksums)
    click.echo(f"checked {report.checked} indexed object(s)")
    for label, keys in (
        ("missing", report.missing),
        ("corrupted", report.corrupted),
        ("orphan (stored, not indexed)", report.orphans),
    ):
        for key in keys:
            click.echo(f"{label}: {key}")
    if not report.ok:
        sys.exit(1)
    click.echo("all good")


@main.group()
def db() -> None:
    """The index schema."""


@db.command("upgrade")
@settings_options
def db_upgrade(settings: Settings) -> None:
    """Apply pending migrations (production runs this explicitly before upgrading)."""
    from pacs.storage.database import make_engine, upgrade

    upgrade(make_engine(settings.effective_database_url))
    click.echo("schema is current")


@main.command("config")
@settings_options
def show_config(settings: Settings) -> None:
    """Print the effective settings (secrets masked)."""
    for key, value in settings_to_dict(settings).items():
        if key in SECRET_SETTINGS and value:
            value = "***"
        click.echo(f"{key} = {value!r}")


def _register_groups() -> None:
    from pacs.cli_ops import register as register_ops
    from pacs.cli_partners import partner, push, route
    from pacs.cli_tokens import token
    from pacs.cli_users import user

    main.add_command(user)
    main.add_command(token)
    register_ops(main)
    for group in (partner, push, route):
        main.add_command(group)


_register_groups()

if __name__ == "__main__":
    main()
