"""Settings: defaults < ``pacs.toml`` < ``PACS_*`` environment < command-line flags.

This is the only module that reads the environment. Everything else receives a
:class:`Settings` object from the composition root.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pacs.errors import ConfigError

DuplicatePolicy = Literal["replace", "keep", "reject"]
StorageBackend = Literal["filesystem", "s3"]

ENV_PREFIX = "PACS_"
# Room for ":<pid>" in the 64 characters the index keeps for a writer's name.
NODE_NAME_MAX = 48
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Settings:
    """Every setting pacs understands, with the embedded defaults.

    The defaults need no configuration: a SQLite index and a filesystem object
    store under ``data_dir``.
    """

    data_dir: Path = Path("pacs-data")
    host: str = "0.0.0.0"
    ae_title: str = "PACS"
    dicom_port: int = 11112
    http_port: int = 8080
    # 0 means one worker process per CPU core.
    workers: int = 0

    # Index: empty means SQLite in data_dir.
    database_url: str = ""
    # FULL makes each commit durable across power loss, not only process crashes.
    # Objects are fsynced before Success; the index is derived data (`pacs reindex`
    # rebuilds it from the objects), so by default its commits survive process
    # crashes (WAL) but not power loss. FULL fsyncs every commit too.
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "NORMAL"
    # Embedded installs migrate on start; production runs `pacs db upgrade` itself.
    auto_migrate: bool = True

    storage: StorageBackend = "filesystem"
    # Empty means data_dir/objects.
    storage_dir: str = ""
    s3_endpoint: str = ""
    s3_bucket: str = "pacs"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_secure: bool = True
    s3_region: str = ""
    # Seconds of silence after which an S3 request fails (the store answers 0xA700).
    s3_timeout_s: float = 5.0

    # Unknown calling AE titles are refused unless this is set.
    accept_unknown_aes: bool = False
    duplicate_policy: DuplicatePolicy = "replace"
    # Larger PDUs mean fewer per-PDU costs in pynetdicom; 0 would let a peer ask
    # us to buffer a PDU of any size.
    max_pdu_size: int = 262144
    # Refuse new objects when the free space of the storage volume drops below this.
    min_free_bytes: int = 512 * 1024 * 1024
    # Seconds a stopping server waits for open associations to finish.
    shutdown_grace_s: float = 10.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0

    # Memory for decoded frames per worker process (the viewer's hot path).
    frame_cache_mb: int = 256
    # Disk for rendered images (thumbnails, JPEG/PNG frames) shared by the workers,
    # under <data_dir>/cache/rendered; 0 turns it off. Safe to delete at any time.
    render_cache_mb: int = 1024

    # Web sign-in.
    session_hours: float = 12.0  # idle timeout
    session_max_days: float = 7.0  # total lifetime of a session
    session_cookie_secure: bool = False  # set true behind HTTPS
    login_max_failures: int = 5  # per user name, within the lockout window
    login_max_address_failures: int = 20  # per client address
    login_lockout_minutes: float = 15.0
    secret_key: str = ""
    log_level: str = "INFO"
    # The address users reach the web side by, e.g. "https://pacs.benhvien.vn" behind a
    # reverse proxy: share links, QR codes and DICOMweb URLs use it. Empty: the address
    # of each request.
    public_url: str = ""

    # Share links (docs in README): how long a new link lasts unless the sharer says,
    # the longest allowed, and how many wrong PINs lock a link for how long.
    share_default_days: int = 7
    share_max_days: int = 90
    share_pin_max_failures: int = 5
    share_pin_lockout_minutes: float = 15.0
    # A TrueType font for printed result sheets; empty: the bundled DejaVu Sans.
    result_sheet_font: str = ""

    # Consultation (docs/consultation.md): this hospital's name on the answers it
    # writes (empty: the AE title), and how long a routing rule waits for a study to
    # stop arriving before it sends what came (one push per study and window), and
    # how soon a push held by a node that died (power cut) is taken up again.
    institution_name: str = ""
    consult_route_settle_s: float = 5.0
    consult_push_lease_s: float = 60.0

    # DICOMweb: the largest STOW-RS request and instance, QIDO-RS results per page
    # when the client asks for more (or says nothing), and how long a series must be
    # quiet before its metadata is prebuilt for WADO-RS.
    dicomweb_max_request_bytes: int = 2 * 1024**3
    dicomweb_max_part_bytes: int = 1024**3
    dicomweb_max_results: int = 1000
    dicomweb_metadata_quiet_s: float = 5.0

    # Several nodes on one database and bucket (docs/operations.md).
    # Names this node in store intents and job leases: unique per running `pacs serve`
    # or gunicorn instance. Empty means the host name.
    node_name: str = ""
    # An unfinished store this old belongs to a writer that died (on any node).
    stale_intent_s: float = 900.0
    # Refuse new objects once the index holds this many bytes (0: no quota). For S3,
    # which cannot tell its free space; the filesystem store also has min_free_bytes.
    max_storage_bytes: int = 0
    # Background jobs (pacs/jobs.py): whether this node's workers run them, how often
    # an idle runner looks for work, how long a claim lasts without a heartbeat, and
    # how failures are retried (delay doubling from job_backoff_s up to the maximum).
    run_jobs: bool = True
    # Jobs each worker process runs at once (one long push does not hold up the rest).
    job_threads: int = 2
    job_poll_s: float = 2.0
    job_lease_s: float = 120.0
    job_max_attempts: int = 5
    job_backoff_s: float = 30.0
    job_backoff_max_s: float = 3600.0
    # Finished jobs are kept this long for the dashboard, then purged.
    job_keep_days: float = 7.0
    # The supervisor serves the node's counters on this port (0: off): for
    # DICOM-only nodes (`pacs serve --no-web`), whose workers have no web server.
    metrics_port: int = 0

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'index.sqlite').resolve()}"

    @property
    def effective_storage_dir(self) -> Path:
        return Path(self.storage_dir) if self.storage_dir else self.data_dir / "objects"

    @property
    def effective_node_name(self) -> str:
        """This node's name: the setting, else the host name."""
        return self.node_name or socket.gethostname()[:NODE_NAME_MAX]

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def with_overrides(self, **overrides: Any) -> Settings:
        """Return a copy with the given (already typed or string) values applied."""
        return _apply(self, {k: v for k, v in overrides.items() if v is not None}, "flag")


def _field_types() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def _coerce(name: str, raw: Any, where: str) -> Any:
    hint = _field_types()[name]
    if isinstance(hint, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint)
    try:
        if origin is Literal:
            allowed = typing.get_args(hint)
            value = str(raw)
            if value not in allowed:
                raise ValueError(f"must be one of {', '.join(allowed)}")
            return value
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError("must be true or false")
        if hint is int:
            return int(raw)
        if hint is float:
            return float(raw)
        if hint is Path:
            return Path(str(raw)).expanduser()
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: setting {name!r}: {exc}") from exc


def _apply(base: Settings, values: Mapping[str, Any], where: str) -> Settings:
    known = {f.name for f in dataclasses.fields(Settings)}
    changes: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in known:
            raise ConfigError(f"{where}: unknown setting {name!r}")
        changes[name] = _coerce(name, raw, where)
    node = changes.get("node_name")
    if node and (len(node) > NODE_NAME_MAX or not _NODE_NAME.match(node)):
        raise ConfigError(
            f"{where}: setting 'node_name': use at most {NODE_NAME_MAX} letters, digits, "
            "'.', '_' or '-'"
        )
    return dataclasses.replace(base, **changes)


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    # Allow either flat keys or a [pacs] table.
    table = data.get("pacs", data)
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [pacs] must be a table")
    return table


def _from_env(environ: Mapping[str, str]) -> dict[str, str]:
    known = {f.name for f in dataclasses.fields(Settings)}
    values = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == "PACS_CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in known:
            values[name] = value
    return values


@dataclass
class SettingsSource:
    """Where the settings came from, for `pacs config` and logs."""

    toml_path: Path | None = None
    env_keys: list[str] = field(default_factory=list)


def load_settings(
    config_path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    **flags: Any,
) -> Settings:
    """Build settings from defaults, ``pacs.toml``, ``PACS_*`` variables and flags.

    The TOML file is ``config_path``, else ``$PACS_CONFIG``, else ``./pacs.toml``
    when it exists. Raises :class:`ConfigError` for unknown keys or bad values.
    """
    env = os.environ if environ is None else environ
    settings = Settings()
    path = config_path or (Path(env["PACS_CONFIG"]) if env.get("PACS_CONFIG") else None)
    if path is None and Path("pacs.toml").is_file():
        path = Path("pacs.toml")
    if path is not None:
        settings = _apply(settings, _from_toml(path), str(path))
    settings = _apply(settings, _from_env(env), "environment")
    settings = settings.with_overrides(**flags)
    return dataclasses.replace(settings, data_dir=settings.data_dir.resolve())


def settings_to_dict(settings: Settings) -> dict[str, Any]:
    """Plain JSON-able dict (used to hand settings to worker processes)."""
    out = {}
    for f in dataclasses.fields(Settings):
        value = getattr(settings, f.name)
        out[f.name] = str(value) if isinstance(value, Path) else value
    return out


def settings_from_dict(values: Mapping[str, Any]) -> Settings:
    return _apply(Settings(), values, "worker settings")
