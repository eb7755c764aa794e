"""A small HTTP client for partner calls (STOW-RS, QIDO-RS counts, pacs-to-pacs).

The standard library's ``http.client`` is enough: one request per call, bodies
streamed from an iterable with a known Content-Length, TLS with the system's
certificate store. Keeping it here means pacs needs no HTTP library at run time.
Bearer tokens go in a header and are never logged (errors name the URL only).
"""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

USER_AGENT = "pacs-consult/1"


class PartnerUnreachable(Exception):
    """The partner could not be reached or the connection broke (worth retrying)."""


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None

    @property
    def reason(self) -> str:
        """What the partner said went wrong (our own JSON errors, else the start of the body)."""
        data = self.json()
        if isinstance(data, dict) and data.get("reason"):
            return str(data["reason"])[:300]
        return self.body[:300].decode("utf-8", "replace")


def join(base: str, path: str) -> str:
    return base.rstrip("/") + "/" + path.lstrip("/")


def request(
    url: str,
    *,
    method: str = "GET",
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    length: int | None = None,
    json_body: Any = None,
    timeout: float = 60.0,
) -> HttpAnswer:
    """One HTTP request; raises PartnerUnreachable on network failures (any status is
    returned as an answer). An iterable ``body`` needs its ``length``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PartnerUnreachable(f"not an http(s) URL: {url[:200]!r}")
    send_headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})}
    if token:
        send_headers["Authorization"] = f"Bearer {token}"
    if json_body is not None:
        body = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
        send_headers["Content-Type"] = "application/json"
    if isinstance(body, bytes | bytearray):
        length = len(body)
    if body is not None:
        if length is None:
            raise ValueError("a streamed body needs its length")
        send_headers["Content-Length"] = str(length)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    conn: http.client.HTTPConnection
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=send_headers)
        response = conn.getresponse()
        data = response.read()
        return HttpAnswer(response.status, response.getheader("Content-Type", "") or "", data)
    except (OSError, http.client.HTTPException) as exc:
        raise PartnerUnreachable(
            f"{method} {parts.scheme}://{parts.netloc}{parts.path}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        conn.close()
