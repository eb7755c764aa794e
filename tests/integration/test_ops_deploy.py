"""``deploy/``: the compose file holds together, and every command it runs works.

Docker cannot run here, so the compose file is parsed and checked (services,
one node name per container, the same database, bucket and session key
everywhere, migrations by the one-shot service only, nginx sending to the
services that exist, TLS ready but commented), and then the containers'
commands run on this machine with the containers' environment, pointed at the
test PostgreSQL and moto S3 instead of the compose services: ``pacs db upgrade``
(migrate), ``pacs serve --no-web`` (a DICOM container, with its metrics port),
gunicorn with ``deploy/gunicorn.conf.py`` and ``make_application()`` (a web
container), and the health checks of both.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from support import (
    LOCALHOST,
    PostgresCluster,
    S3Endpoint,
    echoscu,
    free_port,
    storescu,
    unique_bucket,
    wait_for_port,
)
from support.corpus import REPO_ROOT

pytestmark = pytest.mark.integration

DEPLOY = REPO_ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
NGINX = DEPLOY / "nginx" / "nginx.conf"
IMAGE_ROOT = "/opt/pacs"
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::(?P<op>[?-])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(value: str, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}`` and ``${VAR:?error}``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if variables.get(name):
            return variables[name]
        if op == "-":
            return arg
        raise AssertionError(f"compose needs {name}: {arg}")

    return _VARIABLE.sub(one, value)


def pacs_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("image") == "pacs:latest"
    }


# ---------------------------------------------------------------- the files


def test_the_compose_file_describes_two_stateless_nodes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"postgres", "minio", "migrate", "proxy"} <= set(services)
    nodes = {n: s for n, s in pacs_services(compose).items() if n != "migrate"}
    assert set(nodes) == {"pacs-a-dicom", "pacs-a-web", "pacs-b-dicom", "pacs-b-web"}
    names = [s["environment"]["PACS_NODE_NAME"] for s in nodes.values()]
    assert len(set(names)) == len(names), "every container needs its own node_name"
    shared = ("PACS_DATABASE_URL", "PACS_S3_BUCKET", "PACS_S3_ENDPOINT", "PACS_SECRET_KEY")
    for key in shared:
        assert len({s["environment"][key] for s in nodes.values()}) == 1, key
    for name, service in pacs_services(compose).items():
        env = service["environment"]
        assert env["PACS_AUTO_MIGRATE"] == "false", name
        assert env["PACS_STORAGE"] == "s3", name
    for name, service in nodes.items():
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["volumes"] == [f"{name}:/var/lib/pacs"], "one spool per container"
        command = service["command"]
        if name.endswith("-dicom"):
            assert command == ["pacs", "serve", "--no-web"]
            assert service["environment"]["PACS_METRICS_PORT"] == "9100"
        else:
            assert command[0] == "gunicorn" and "pacs.viewer.wsgi:make_application()" in command
    assert services["migrate"]["command"] == ["pacs", "db", "upgrade"]
    assert services["migrate"]["restart"] == "no"

    build = services["pacs-a-web"]["build"]
    assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
        DEPLOY / "Dockerfile"
    )
    required = {m["name"] for m in _VARIABLE.finditer(COMPOSE.read_text()) if m["op"] == "?"}
    assert required <= set(env_example()), "env.example must name every required variable"


def test_the_dockerfile_copies_what_exists() -> None:
    lines = (DEPLOY / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies
    for sources in copies:
        for source in sources:
            assert (REPO_ROOT / source).exists(), source
    assert any("gunicorn.conf.py" in line for line in lines)
    assert [line for line in lines if line.startswith("CMD")] == [
        'CMD ["pacs", "serve", "--no-web"]'
    ]
    assert f"WORKDIR {IMAGE_ROOT}" in lines


def test_nginx_sends_to_the_compose_services_and_is_ready_for_tls(
    compose: dict[str, Any],
) -> None:
    text = NGINX.read_text()
    assert text.count("{") == text.count("}")
    active = "\n".join(line for line in text.splitlines() if not line.strip().startswith("#"))
    upstreams = re.findall(r"^\s*server\s+([\w-]+):(\d+)", active, re.MULTILINE)
    services = compose["services"]
    assert sorted(upstreams) == [
        ("pacs-a-dicom", "11112"),
        ("pacs-a-web", "8080"),
        ("pacs-b-dicom", "11112"),
        ("pacs-b-web", "8080"),
    ]
    for host, port in upstreams:
        env = services[host]["environment"]
        assert env.get("PACS_DICOM_PORT", env.get("PACS_HTTP_PORT")) == port
    # TLS: certificate paths written out, commented, inside the mounted folder.
    assert "ssl_certificate" not in active
    for path in re.findall(r"#\s*ssl_certificate(?:_key)?\s+(\S+);", text):
        assert path.startswith("/etc/nginx/certs/")
    assert "./certs:/etc/nginx/certs:ro" in services["proxy"]["volumes"]
    assert {"80:80", "443:443", "11112:11112"} <= set(services["proxy"]["ports"])


# ---------------------------------------------------------------- the commands, run here


class Container:
    """One compose service's command, run here with its environment (adapted)."""

    def __init__(self, service: dict[str, Any], env: dict[str, str], workdir: Path) -> None:
        self.command = list(service["command"])
        self.env = env
        self.workdir = workdir
        self.log = workdir / "output.log"
        self.process: subprocess.Popen[bytes] | None = None

    def executable(self) -> list[str]:
        # The image's entry points are console scripts: here, the virtualenv's; and
        # its files (WORKDIR /opt/pacs) are the repository's.
        name, *args = self.command
        args = [a.replace(f"{IMAGE_ROOT}/", f"{REPO_ROOT}/") for a in args]
        return [str(Path(sys.executable).parent / name), *args]

    def run(self, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.executable(),
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.executable(),
                env=self.env,
                cwd=self.workdir,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> int:
        """SIGTERM, as ``docker stop`` sends; the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(30)
                raise AssertionError(f"{self.command} ignored SIGTERM\n{self.output()}") from None
        return self.process.returncode

    def healthcheck(self, service: dict[str, Any], port: int) -> subprocess.CompletedProcess:
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD"
        args = [re.sub(r"\b(8080|11112)\b", str(port), part) for part in test[1:]]
        return subprocess.run(
            [sys.executable, *args[1:]] if args[0] == "python" else args,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture
def here(
    compose: dict[str, Any],
    postgres: PostgresCluster,
    s3_endpoint: S3Endpoint,
    tmp_path: Path,
) -> Iterator[Any]:
    """A factory: the compose service ``name`` as a :class:`Container` on this machine."""
    url = postgres.create_database()
    database = url.rsplit("/", 1)[-1]
    bucket = unique_bucket()
    variables = {**env_example(), "MINIO_ROOT_USER": s3_endpoint.access_key}
    variables["MINIO_ROOT_PASSWORD"] = s3_endpoint.secret_key
    started: list[Container] = []

    def make(name: str, **overrides: str) -> Container:
        service = compose["services"][name]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PACS_")}
        for key, value in service["environment"].items():
            env[key] = interpolate(str(value), variables)
        # The compose services' addresses, here: the test PostgreSQL and moto.
        assert env["PACS_DATABASE_URL"].startswith("postgresql://pacs:")
        env["PACS_DATABASE_URL"] = f"postgresql://pacs@{LOCALHOST}:{postgres.port}/{database}"
        assert env["PACS_S3_ENDPOINT"] == "minio:9000"
        env["PACS_S3_ENDPOINT"] = s3_endpoint.endpoint
        env["PACS_S3_BUCKET"] = bucket
        env["PACS_S3_REGION"] = s3_endpoint.region
        workdir = tmp_path / name
        workdir.mkdir()
        env["PACS_DATA_DIR"] = str(workdir / "data")
        env["PACS_HOST"] = LOCALHOST
        env.update(overrides)
        container = Container(service, env, workdir)
        started.append(container)
        return container

    yield make
    for container in started:
        if container.process is not None and container.process.poll() is None:
            container.stop()


def _enrol(env: dict[str, str], *titles: str) -> None:
    for title in titles:
        added = subprocess.run(
            [sys.executable, "-m", "pacs", "ae", "add", title, LOCALHOST, "104"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert added.returncode == 0, added.stdout + added.stderr


def test_the_containers_commands_run_a_working_node(here: Any, compose: dict[str, Any]) -> None:
    services = compose["services"]

    # migrate: the schema, once.
    migrate = here("migrate")
    upgraded = migrate.run()
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert "schema is current" in upgraded.stdout

    # A DICOM container.
    dicom_port, metrics_port = free_port(), free_port()
    dicom = here(
        "pacs-a-dicom",
        PACS_DICOM_PORT=str(dicom_port),
        PACS_METRICS_PORT=str(metrics_port),
        PACS_WORKERS="2",
    )
    _enrol(dicom.env, "ECHOSCU", "STORESCU")
    dicom.start()
    deadline = time.monotonic() + 60
    while echoscu(LOCALHOST, dicom_port, calling_aet="ECHOSCU").returncode != 0:
        assert dicom.process is not None and dicom.process.poll() is None, dicom.output()
        assert time.monotonic() < deadline, dicom.output()
        time.sleep(0.2)
    mr = sorted((REPO_ROOT / "sample_dicom" / "mr_brain").glob("*.dcm"))[:3]
    sent = storescu(LOCALHOST, dicom_port, mr, calling_aet="STORESCU")
    assert sent.returncode == 0, sent.output
    health = dicom.healthcheck(services["pacs-a-dicom"], dicom_port)
    assert health.returncode == 0, health.stderr
    counters = requests.get(f"http://{LOCALHOST}:{metrics_port}/metrics", timeout=10).text
    assert 'pacs_instances_received_total{outcome="stored",source="dicom"} 3.0' in counters
    assert "pacs_dicom_associations_total" in counters

    # A web container: gunicorn, two workers.
    http_port = free_port()
    web = here(
        "pacs-a-web",
        PACS_HTTP_PORT=str(http_port),
        PACS_WORKERS="2",
        # Plain HTTP here; behind the TLS proxy the cookie stays Secure.
        PACS_SESSION_COOKIE_SECURE="false",
    )
    web.start()
    wait_for_port(LOCALHOST, http_port, 60, process=web.process, log=web.log)
    base = f"http://{LOCALHOST}:{http_port}"
    health = web.healthcheck(services["pacs-a-web"], http_port)
    assert health.returncode == 0, health.stderr + web.output()
    assert requests.get(f"{base}/healthz", timeout=10).json() == {"status": "ok"}

    # The first administrator, printed once by the web side, signs in and sees
    # what the DICOM container stored.
    match = re.search(r"as '(\w+)' with the password: (\S+)", web.output())
    assert match, web.output()
    browser = requests.Session()
    token = re.search(r'name="csrf-token" content="([^"]+)"', browser.get(f"{base}/login").text)
    assert token is not None
    signed_in = browser.post(
        f"{base}/login",
        data={"username": match[1], "password": match[2], "csrf_token": token[1]},
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.status_code == 302, signed_in.text[:300]
    for _ in range(6):  # several requests: both gunicorn workers answer some
        summary = browser.get(f"{base}/admin/ops/api/summary", timeout=10)
        assert summary.status_code == 200, summary.text
        assert summary.json()["totals"]["instances"] == 3
    scraped = requests.get(f"{base}/metrics", timeout=10).text
    assert "pacs_instances 3.0" in scraped and "pacs_index_up 1.0" in scraped
    served = re.search(
        r'pacs_http_requests_total\{area="ops",method="GET",status="200"\} (\S+)', scraped
    )
    assert served and float(served[1]) == 6, scraped[-3000:]

    assert web.stop() == 0, web.output()
    assert dicom.stop() == 0, dicom.output()


def test_node_names_default_to_the_host_and_are_checked(tmp_path: Path) -> None:
    import socket

    from pacs.config import load_settings
    from pacs.errors import ConfigError

    plain = load_settings(environ={}, data_dir=tmp_path)
    assert plain.effective_node_name == socket.gethostname()[:48]
    named = load_settings(environ={"PACS_NODE_NAME": "pacs-a-dicom"}, data_dir=tmp_path)
    assert named.effective_node_name == "pacs-a-dicom"
    for bad in ("pacs a", "pacs:1", "-x", "x" * 49, "nút-1"):
        with pytest.raises(ConfigError, match="node_name"):
            load_settings(environ={"PACS_NODE_NAME": bad}, data_dir=tmp_path)
