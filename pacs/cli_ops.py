"""Operators' commands: ``pacs backup``, ``pacs study delete``, ``pacs jobs``.

Registered in :mod:`pacs.cli` with ``register(main)``.

    pacs backup /srv/backup/pacs-$(date +%F)            # index (+ session key)
    pacs backup /mnt/usb/pacs-$(date +%F) --objects      # and a filesystem object store
    pacs study delete 1.2.840.113619.2.55.3.604688 --yes
    pacs jobs status
    pacs jobs retry 42
    pacs jobs probe --count 20                           # which nodes run jobs?
"""

from __future__ import annotations

import getpass
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pacs.cli_common import open_archive, settings_options
from pacs.config import Settings

if TYPE_CHECKING:
    pass


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


# ---------------------------------------------------------------- backup


@click.command("backup")
@settings_options
@click.argument("dest", type=click.Path(path_type=Path, file_okay=False))
@click.option(
    "--objects/--no-objects",
    default=False,
    help="Also copy a filesystem object store (S3: use bucket replication).",
)
def backup_cmd(settings: Settings, dest: Path, objects: bool) -> None:
    """Back up the index (and the session key) into the new folder DEST, online.

    SQLite: the backup API; PostgreSQL: pg_dump --format=custom. See
    docs/operations.md for restoring.
    """
    from pacs.backup import backup

    report = backup(settings, dest, objects=objects)
    click.echo(f"{report.database} index → {report.index_file}")
    if objects:
        click.echo(f"{report.objects_copied} object(s), {_size(report.objects_bytes)} → {dest}")
    click.echo(f"manifest: {dest / 'backup.json'}")


# ---------------------------------------------------------------- study


@click.group()
def study() -> None:
    """Studies: delete."""


@study.command("delete")
@settings_options
@click.argument("study_uid")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def study_delete(settings: Settings, study_uid: str, yes: bool) -> None:
    """Delete a study: its index rows and its objects (audited as study.delete)."""
    from pacs.audit import Actor
    from pacs.ops import delete_study
    from pacs.storage.matching import Level, Query

    archive = open_archive(settings)
    rows = archive.search(
        Query(Level.STUDY, {"StudyInstanceUID": study_uid.strip()}, limit=1),
        [
            "PatientID",
            "PatientName",
            "StudyDate",
            "StudyDescription",
            "NumberOfStudyRelatedInstances",
        ],
    )
    if rows and not yes:
        row = rows[0]
        click.echo(
            f"Study {study_uid}: patient {row.get('PatientID', '')} {row.get('PatientName', '')}, "
            f"{row.get('StudyDate', '')} {row.get('StudyDescription', '')}, "
            f"{row.get('NumberOfStudyRelatedInstances', '?')} instance(s)"
        )
        click.confirm("Delete it for good (index and objects)?", abort=True)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    deleted = delete_study(archive, study_uid, Actor("system", f"cli:{user}"))
    click.echo(
        f"deleted study {deleted.study_uid}: {deleted.instances} instance(s), "
        f"{_size(deleted.bytes)}"
    )


# ---------------------------------------------------------------- jobs


@click.group()
def jobs() -> None:
    """The background job queue shared by every node."""


def _queue(settings: Settings) -> Any:
    from pacs.jobs import make_queue

    return make_queue(open_archive(settings), settings)


@jobs.command("status")
@settings_options
@click.option("--failed", "show_failed", is_flag=True, help="List the dead jobs with their error.")
def jobs_status(settings: Settings, show_failed: bool) -> None:
    """Jobs per kind and state; exits 1 when any job is dead."""
    queue = _queue(settings)
    depth = queue.depth()
    lag = queue.oldest_due()
    kinds = sorted({kind for kind, _ in depth})
    if not kinds:
        click.echo("the queue is empty")
        return
    click.echo(f"{'kind':32} {'queued':>7} {'running':>7} {'done':>7} {'dead':>5}  oldest due")
    for kind in kinds:
        counts = [depth.get((kind, s), 0) for s in ("queued", "running", "done", "dead")]
        wait = f"{lag[kind]:.0f} s" if kind in lag else "-"
        click.echo(f"{kind:32} {counts[0]:7} {counts[1]:7} {counts[2]:7} {counts[3]:5}  {wait}")
    dead = sum(n for (_, state), n in depth.items() if state == "dead")
    if show_failed:
        for job in queue.recent(state="dead", limit=100):
            click.echo(f"#{job.id} {job.kind} after {job.attempts} attempt(s): {job.last_error}")
    if dead:
        sys.exit(1)


@jobs.command("retry")
@settings_options
@click.argument("job_ids", nargs=-1, type=int, required=True)
def jobs_retry(settings: Settings, job_ids: tuple[int, ...]) -> None:
    """Queue dead jobs again (their attempts start over)."""
    queue = _queue(settings)
    failed = [job_id for job_id in job_ids if not queue.retry(job_id)]
    for job_id in failed:
        click.echo(f"job {job_id} is not dead (or an equal job is already queued)", err=True)
    click.echo(f"queued {len(job_ids) - len(failed)} job(s) again")
    if failed:
        sys.exit(1)


@jobs.command("probe")
@settings_options
@click.option("--count", default=10, show_default=True, help="How many probe jobs.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for them.")
def jobs_probe(settings: Settings, count: int, timeout: float) -> None:
    """Enqueue probe jobs and show which node workers ran them (exit 1 if some did not run)."""
    from pacs.jobs import PROBE

    queue = _queue(settings)
    ids = [queue.enqueue(PROBE, {"sleep_s": 0.05}) for _ in range(count)]
    deadline = time.monotonic() + timeout
    pending = set(ids)
    ran: dict[str, int] = {}
    while pending and time.monotonic() < deadline:
        for job_id in sorted(pending):
            job = queue.get(job_id)
            if job is not None and job.state in ("done", "dead"):
                pending.discard(job_id)
                who = (
                    (job.result or {}).get("node", job.locked_by) if job.state == "done" else "dead"
                )
                ran[who] = ran.get(who, 0) + 1
        if pending:
            time.sleep(0.2)
    for who, n in sorted(ran.items()):
        click.echo(f"{who}: {n}")
    if pending:
        click.echo(
            f"{len(pending)} probe(s) not run within {timeout:.0f} s: is any node running jobs?"
        )
        sys.exit(1)


def register(main: click.Group) -> None:
    """Add these commands to the ``pacs`` command line."""
    main.add_command(backup_cmd)
    main.add_command(study)
    main.add_command(jobs)
