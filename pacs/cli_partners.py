"""``pacs partner``, ``pacs push`` and ``pacs route``: remote consultation from the command line.

Registered in :mod:`pacs.cli` with ``main.add_command(partner)`` (and ``push``,
``route``). Secrets never go on the command line (where ``ps`` and the shell
history would keep them): a partner's token is read from a file or stdin, and a
token we issue is printed once.

    pacs partner add "BV Trung Uong" --ae-title BVTW --host 10.1.2.3 --port 104 \\
        --dicomweb-url https://pacs.bvtw.vn/dicomweb --pacs-url https://pacs.bvtw.vn \\
        --token-file bvtw.token --compression jpegls --bandwidth 500k --issue-token
    pacs partner list
    pacs partner test "BV Trung Uong"
    pacs push 1.2.840.113619... "BV Trung Uong"
    pacs push status
    pacs route add "BV Trung Uong" --calling-ae CT_KHOA_CC --modality CT
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pacs.cli_common import open_archive, settings_options
from pacs.config import Settings

if TYPE_CHECKING:
    from pacs.consult import Consult


def _consult(settings: Settings) -> Consult:
    from pacs.consult import Consult

    return Consult.build(settings, open_archive(settings))


def _bandwidth(value: str | None) -> int | None:
    """``500k`` / ``2M`` / ``125000`` bytes per second; ``0`` for no cap."""
    if value is None:
        return None
    text = value.strip().lower().removesuffix("b/s").removesuffix("/s")
    factor = 1
    if text[-1:] in ("k", "m", "g"):
        factor = {"k": 1000, "m": 1000**2, "g": 1000**3}[text[-1]]
        text = text[:-1]
    try:
        return int(float(text) * factor)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: use bytes per second, e.g. 500k or 2M") from exc


def _read_token(token_file: Path | None, token_stdin: bool) -> str | None:
    if token_file is not None and token_stdin:
        raise click.UsageError("give --token-file or --token-stdin, not both")
    if token_file is not None:
        return token_file.read_text(encoding="utf-8").strip()
    if token_stdin:
        return sys.stdin.readline().strip()
    return None


# ---------------------------------------------------------------- partner


@click.group()
def partner() -> None:
    """Partner hospitals for remote consultation / Bệnh viện đối tác hội chẩn từ xa."""


@partner.command("add")
@settings_options
@click.argument("name")
@click.option("--ae-title", help="The partner's DICOM AE title.")
@click.option("--host", help="Its DICOM host.")
@click.option("--port", type=int, help="Its DICOM port.")
@click.option("--dicomweb-url", help="Its DICOMweb root, e.g. https://pacs.bv.vn/dicomweb.")
@click.option("--pacs-url", help="Its pacs web root, when it runs pacs (requests go pacs-to-pacs).")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="File holding the token the partner gave us (stored encrypted).",
)
@click.option("--token-stdin", is_flag=True, help="Read that token from standard input.")
@click.option("--transport", type=click.Choice(["dicom", "dicomweb"]), help="How to send to it.")
@click.option(
    "--compression",
    type=click.Choice(["none", "jpegls", "j2k"]),
    help="Lossless compression on the way (only when the partner accepts it).",
)
@click.option("--bandwidth", help="Cap in bytes per second (500k, 2M; 0: none).")
@click.option(
    "--scope",
    type=click.Choice(["shared", "all"]),
    help="What its AE and token may see (default for a new partner: shared).",
)
@click.option("--description", help="Free text.")
@click.option(
    "--issue-token", is_flag=True, help="Issue the token it presents to us (printed once)."
)
@click.option("--update", is_flag=True, help="Change an existing partner (only the options given).")
def partner_add(
    settings: Settings,
    name: str,
    token_file: Path | None,
    token_stdin: bool,
    bandwidth: str | None,
    issue_token: bool,
    update: bool,
    **fields: Any,
) -> None:
    """Add (or with --update change) a partner hospital."""
    from pacs.storage.consult_models import NameTaken

    consult = _consult(settings)
    token = _read_token(token_file, token_stdin)
    try:
        saved = consult.partners.save(
            name,
            update=update,
            token=token,
            bandwidth_bps=_bandwidth(bandwidth),
            **fields,
        )
    except NameTaken:
        raise click.ClickException(f"partner {name!r} exists: use --update to change it") from None
    click.echo(f"{'updated' if update else 'added'} partner {saved.name}")
    if issue_token:
        secret = consult.partners.issue_token(saved, by="cli")
        click.echo(f"token for {saved.name} to present to us (shown once): {secret}")


@partner.command("list")
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def partner_list(settings: Settings, as_json: bool) -> None:
    """List partner hospitals (secrets are never shown)."""
    consult = _consult(settings)
    partners = consult.partners.all()
    rows = [
        {
            "name": p.name,
            "ae_title": p.ae_title,
            "address": f"{p.host}:{p.port}" if p.ae_title else "",
            "dicomweb_url": p.dicomweb_url,
            "pacs_url": p.pacs_url,
            "token": p.token_hint,
            "issued_token": p.inbound_token_id is not None,
            "transport": p.transport,
            "compression": p.compression,
            "bandwidth_bps": p.bandwidth_bps,
            "scope": consult.partners.scope(p),
            "shared_studies": len(consult.partners.shares.study_uids(p.id)),
        }
        for p in partners
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("no partners (pacs partner add NAME ...)")
        return
    for r in rows:
        cap = f"{r['bandwidth_bps'] // 1000} KB/s" if r["bandwidth_bps"] else "no cap"
        click.echo(
            f"{r['name']}: AE {r['ae_title'] or '-'} {r['address']} · DICOMweb "
            f"{r['dicomweb_url'] or '-'} · pacs {r['pacs_url'] or '-'} · token "
            f"{r['token'] or '-'} · sends by {r['transport']}, {r['compression']}, {cap} · "
            f"sees {r['scope'] or '-'} ({r['shared_studies']} shared)"
        )


@partner.command("remove")
@settings_options
@click.argument("name")
def partner_remove(settings: Settings, name: str) -> None:
    """Remove a partner: its AE enrolment goes and the token it presented is revoked."""
    removed = _consult(settings).partners.remove(name)
    click.echo(f"removed partner {removed.name}")


@partner.command("test")
@settings_options
@click.argument("name")
def partner_test(settings: Settings, name: str) -> None:
    """Check the partner answers: C-ECHO, DICOMweb, and its pacs. Exits 1 on a failure."""
    consult = _consult(settings)
    checks = consult.partners.test(consult.partners.named(name))
    if not checks:
        raise click.ClickException("nothing to test: the partner has no address")
    for check in checks:
        click.echo(f"{check.what}: {'ok' if check.ok else 'FAILED'} ({check.detail})")
    if not all(c.ok for c in checks):
        sys.exit(1)


@partner.command("token")
@settings_options
@click.argument("name")
def partner_token(settings: Settings, name: str) -> None:
    """Issue a new token for the partner to present to us (the old one stops working)."""
    consult = _consult(settings)
    secret = consult.partners.issue_token(consult.partners.named(name), by="cli")
    click.echo(f"token for {name} to present to us (shown once): {secret}")


@partner.command("share")
@settings_options
@click.argument("name")
@click.argument("study_uid")
@click.option("--remove", is_flag=True, help="Stop sharing it.")
def partner_share(settings: Settings, name: str, study_uid: str, remove: bool) -> None:
    """Let the partner query and retrieve a study (or, with --remove, no longer)."""
    consult = _consult(settings)
    found = consult.partners.named(name)
    if remove:
        consult.partners.unshare(found, study_uid)
        click.echo(f"study {study_uid} no longer shared with {found.name}")
    else:
        consult.requests.study_facts(study_uid)
        consult.partners.share(found, study_uid, "manual:cli")
        click.echo(f"study {study_uid} shared with {found.name}")


# ---------------------------------------------------------------- push


class _PushGroup(click.Group):
    """``pacs push STUDY PARTNER`` is ``pacs push send STUDY PARTNER``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["send", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_PushGroup)
def push() -> None:
    """Send studies to partners, and follow the sends / Gửi ca chụp cho đối tác."""


def _push_line(p: Any, names: dict[int, str]) -> str:
    mb = p.wire_bytes / 1e6
    verified = f", partner counts {p.verified_count}" if p.verified_count is not None else ""
    error = f" — {p.last_error}" if p.last_error and p.state != "done" else ""
    return (
        f"#{p.id} {p.state:9} {names.get(p.partner_id, '?')}: study {p.study_uid} "
        f"{p.sent}/{p.total} instance(s), {mb:.1f} MB on the wire"
        f"{f', {p.refused} refused' if p.refused else ''}{verified} "
        f"({p.origin}, {p.transport}{', ' + p.compression if p.compression != 'none' else ''}, "
        f"attempt {p.attempts}){error}"
    )


def _run_here(consult: Consult) -> int:
    """Run the due pushes in this process (for a node without workers, or a script)."""
    from pacs.consult import PUSH_JOB
    from pacs.jobs import JobRunner
    from pacs.scp import sending, tuning

    tuning.install()
    sending.install()
    runner = JobRunner(consult.queue, f"cli:{os.getpid()}")
    runner.register(PUSH_JOB, consult.pushes.run, lease_s=60)
    return runner.run_pending()


@push.command("send")
@settings_options
@click.argument("study_uid")
@click.argument("partner_name", metavar="PARTNER")
@click.option("--series", "series", multiple=True, metavar="UID", help="Only this series (repeat).")
@click.option("--now", is_flag=True, help="Send from this process now instead of a worker.")
@click.option("--wait", is_flag=True, help="Show progress until the push ends.")
def push_send(
    settings: Settings,
    study_uid: str,
    partner_name: str,
    series: tuple[str, ...],
    now: bool,
    wait: bool,
) -> None:
    """Queue a push of a study (or some series) to a partner."""
    consult = _consult(settings)
    target = consult.partners.named(partner_name)
    created = consult.pushes.create(
        target, study_uid, series_uids=series, origin="manual", created_by="cli"
    )
    click.echo(f"push #{created.id}: {created.total} instance(s) of {study_uid} to {target.name}")
    if now:
        _run_here(consult)
    if now or wait:
        _follow(consult, created.id)


def _follow(consult: Consult, push_id: int) -> None:
    names = {p.id: p.name for p in consult.partners.all()}
    last = ""
    while True:
        current = consult.pushes.store.get(push_id)
        if current is None:
            raise click.ClickException(f"push #{push_id} is gone")
        line = _push_line(current, names)
        if line != last:
            click.echo(line)
            last = line
        if not current.active:
            if current.state != "done":
                sys.exit(1)
            return
        time.sleep(1.0)


@push.command("status")
@settings_options
@click.argument("push_id", type=int, required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--watch", is_flag=True, help="Follow one push until it ends.")
def push_status(settings: Settings, push_id: int | None, as_json: bool, watch: bool) -> None:
    """Recent pushes with their progress (n of m instances, bytes), or one push."""
    consult = _consult(settings)
    if watch:
        if push_id is None:
            raise click.UsageError("--watch needs a push id")
        _follow(consult, push_id)
        return
    names = {p.id: p.name for p in consult.partners.all()}
    if push_id is not None:
        found = consult.pushes.store.get(push_id)
        pushes = [found] if found else []
    else:
        pushes = consult.pushes.store.recent(limit=30)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "id": p.id,
                        "partner": names.get(p.partner_id, ""),
                        "study_uid": p.study_uid,
                        "state": p.state,
                        "sent": p.sent,
                        "total": p.total,
                        "refused": p.refused,
                        "bytes_total": p.bytes_total,
                        "bytes_sent": p.bytes_sent,
                        "wire_bytes": p.wire_bytes,
                        "verified_count": p.verified_count,
                        "attempts": p.attempts,
                        "last_error": p.last_error,
                        "origin": p.origin,
                        "created_at": p.created_at.isoformat(),
                        "finished_at": p.finished_at.isoformat() if p.finished_at else None,
                    }
                    for p in pushes
                ],
                indent=2,
            )
        )
        return
    if not pushes:
        click.echo("no pushes")
        return
    for p in pushes:
        click.echo(_push_line(p, names))


@push.command("retry")
@settings_options
@click.argument("push_id", type=int)
def push_retry(settings: Settings, push_id: int) -> None:
    """Queue a failed or cancelled push again (instances the partner refused too)."""
    again = _consult(settings).pushes.retry(push_id)
    click.echo(f"push #{again.id} queued again ({again.total - again.sent} instance(s) to send)")


@push.command("cancel")
@settings_options
@click.argument("push_id", type=int)
def push_cancel(settings: Settings, push_id: int) -> None:
    """Stop a queued or running push (what was confirmed stays confirmed)."""
    if not _consult(settings).pushes.store.cancel(push_id):
        raise click.ClickException(f"push #{push_id} is not queued or running")
    click.echo(f"push #{push_id} cancelled")


# ---------------------------------------------------------------- route


@click.group()
def route() -> None:
    """Routing rules: send what arrives to partners / Quy tắc tự động gửi ảnh."""


@route.command("add")
@settings_options
@click.argument("partner_name", metavar="PARTNER")
@click.option("--calling-ae", default="", help="Only what this AE sends us.")
@click.option("--modality", default="", help="Only series of this modality (CT, MR...).")
@click.option("--description", default="", help="Only studies whose description contains this.")
@click.option("--name", default="", help="A name for the rule.")
def route_add(
    settings: Settings,
    partner_name: str,
    calling_ae: str,
    modality: str,
    description: str,
    name: str,
) -> None:
    """Add a rule: matching instances go to PARTNER once their study settles."""
    consult = _consult(settings)
    target = consult.partners.named(partner_name)
    modality = modality.strip().upper()
    if modality and not (modality.isalnum() and len(modality) <= 16):
        raise click.BadParameter("modality is a code like CT or MR")
    rule = consult.router.rules.add(
        target.id,
        name=name,
        calling_ae=calling_ae.strip(),
        modality=modality,
        description_contains=description.strip(),
        created_by="cli",
    )
    click.echo(f"rule #{rule.id} added: {_rule_text(rule, target.name)}")


def _rule_text(rule: Any, partner_name: str) -> str:
    parts = []
    if rule.modality:
        parts.append(f"every {rule.modality}")
    else:
        parts.append("every study")
    if rule.calling_ae:
        parts.append(f"from {rule.calling_ae}")
    if rule.description_contains:
        parts.append(f"described '*{rule.description_contains}*'")
    state = "" if rule.enabled else " (disabled)"
    return " ".join(parts) + f" goes to {partner_name}{state}"


@route.command("list")
@settings_options
def route_list(settings: Settings) -> None:
    """List routing rules."""
    consult = _consult(settings)
    names = {p.id: p.name for p in consult.partners.all()}
    rules = consult.router.rules.all()
    if not rules:
        click.echo("no routing rules (pacs route add PARTNER ...)")
    for rule in rules:
        label = f" [{rule.name}]" if rule.name else ""
        click.echo(f"#{rule.id}{label}: {_rule_text(rule, names.get(rule.partner_id, '?'))}")


@route.command("remove")
@settings_options
@click.argument("rule_id", type=int)
def route_remove(settings: Settings, rule_id: int) -> None:
    """Remove a routing rule."""
    if not _consult(settings).router.rules.remove(rule_id):
        raise click.ClickException(f"no rule #{rule_id}")
    click.echo(f"removed rule #{rule_id}")
