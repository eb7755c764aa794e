"""``multipart/related`` bodies (RFC 2387) as PS3.18 uses them: written as a stream for
WADO-RS responses, and read from a request stream into spooled files for STOW-RS.

Neither direction holds a whole body in memory: responses are generators of
chunks; a request is copied part by part into temporary files, with size limits
checked as the bytes arrive.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pacs.errors import PacsError, PayloadTooLarge

CRLF = b"\r\n"
# Header blocks of a part beyond this are not a DICOMweb client's.
MAX_PART_HEADER_BYTES = 16 * 1024


class MalformedMultipart(PacsError):
    """The body is not the multipart/related message its Content-Type announces."""

    http_status = 400
    dicom_status = 0xC000


def new_boundary() -> str:
    # Random, so it cannot occur inside DICOM bytes by accident (RFC 2046 5.1.1).
    return "pacs-" + secrets.token_hex(16)


def content_type(part_type: str, boundary: str, **params: str) -> str:
    """``multipart/related; type="..."; boundary=...`` (extra parameters appended)."""
    extra = "".join(f"; {k.replace('_', '-')}={v}" for k, v in params.items())
    return f'multipart/related; type="{part_type}"{extra}; boundary={boundary}'


class MultipartWriter:
    """Frames parts: ``part_start`` before each part's bytes, ``end`` after the last."""

    def __init__(self, boundary: str | None = None) -> None:
        self.boundary = boundary or new_boundary()
        self._parts = 0

    def part_start(self, part_content_type: str, headers: Iterable[tuple[str, str]] = ()) -> bytes:
        lines = [f"Content-Type: {part_content_type}"]
        lines += [f"{name}: {value}" for name, value in headers]
        # The CRLF before a delimiter belongs to the delimiter (RFC 2046 5.1.1).
        lead = b"" if self._parts == 0 else CRLF
        self._parts += 1
        return lead + f"--{self.boundary}\r\n".encode() + "\r\n".join(lines).encode() + CRLF * 2

    def end(self) -> bytes:
        lead = b"" if self._parts == 0 else CRLF
        return lead + f"--{self.boundary}--\r\n".encode()

    @property
    def parts(self) -> int:
        return self._parts


def encode(parts: Iterable[tuple[str, bytes]], boundary: str | None = None) -> tuple[bytes, str]:
    """A small body in memory (frames, bulk data); returns it and its boundary."""
    writer = MultipartWriter(boundary)
    chunks: list[bytes] = []
    for part_type, data in parts:
        chunks.append(writer.part_start(part_type))
        chunks.append(data)
    chunks.append(writer.end())
    return b"".join(chunks), writer.boundary


# ---------------------------------------------------------------- reading


@dataclass(frozen=True)
class SpooledPart:
    """One part of a request, copied to a temporary file."""

    index: int
    headers: dict[str, str]
    path: Path
    size: int

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    text = block.decode("latin-1")
    for line in text.split("\r\n"):
        if not line.strip():
            continue
        if line[0] in " \t" and headers:
            # An obsolete folded continuation line.
            last = next(reversed(headers))
            headers[last] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise MalformedMultipart(f"malformed part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    return headers


class _Reader:
    """A buffer over a stream that counts what it has read."""

    def __init__(self, stream: BinaryIO, chunk: int, max_total: int | None) -> None:
        self.stream = stream
        self.chunk = chunk
        self.max_total = max_total
        self.buf = bytearray()
        self.total = 0
        self.eof = False

    def fill(self) -> bool:
        """Read one more chunk; False at the end of the stream."""
        if self.eof:
            return False
        data = self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.total += len(data)
        if self.max_total is not None and self.total > self.max_total:
            raise PayloadTooLarge(f"request body exceeds the limit of {self.max_total} bytes")
        self.buf += data
        return True


def read_parts(
    stream: BinaryIO,
    boundary: str,
    *,
    spool: Callable[[], AbstractContextManager[Path]],
    stack: ExitStack,
    max_part_bytes: int | None = None,
    max_total_bytes: int | None = None,
    chunk: int = 1 << 20,
) -> list[SpooledPart]:
    """Copy every part of a multipart body into its own spooled file.

    ``spool()`` gives a temporary path (entered on ``stack``, so the files live
    as long as the caller's stack). Raises :class:`MalformedMultipart` for a body
    that does not follow RFC 2046 (no delimiter, truncated, bad headers, no
    parts) and :class:`~pacs.errors.PayloadTooLarge` past either limit.
    """
    if not boundary or len(boundary) > 200:
        raise MalformedMultipart("the multipart boundary is missing or too long")
    dash = b"--" + boundary.encode("latin-1")
    delimiter = CRLF + dash
    reader = _Reader(stream, chunk, max_total_bytes)

    # Preamble: the first delimiter opens the body or follows a CRLF.
    while True:
        if reader.buf.startswith(dash):
            pos = 0
            break
        found = reader.buf.find(delimiter)
        if found >= 0:
            pos = found + 2
            break
        if not reader.fill():
            raise MalformedMultipart("no multipart boundary found in the body")
    del reader.buf[: pos + len(dash)]

    parts: list[SpooledPart] = []
    while True:
        # After a delimiter: "--" closes the body, else padding and CRLF open a part.
        while len(reader.buf) < 2 and reader.fill():
            pass
        if reader.buf.startswith(b"--"):
            return _finish(parts)
        line_end = reader.buf.find(CRLF)
        while line_end < 0:
            if len(reader.buf) > 1024 or not reader.fill():
                raise MalformedMultipart("malformed multipart delimiter line")
            line_end = reader.buf.find(CRLF)
        if reader.buf[:line_end].strip(b" \t"):
            raise MalformedMultipart("unexpected bytes after a multipart boundary")
        del reader.buf[: line_end + 2]

        # Part headers end at an empty line (a part may have none at all).
        if reader.buf.startswith(CRLF):
            headers_block = b""
            del reader.buf[:2]
        else:
            end = reader.buf.find(CRLF * 2)
            while end < 0:
                if len(reader.buf) > MAX_PART_HEADER_BYTES:
                    raise MalformedMultipart("part headers are too long")
                if not reader.fill():
                    raise MalformedMultipart("body ends inside part headers")
                end = reader.buf.find(CRLF * 2)
            headers_block = bytes(reader.buf[:end])
            del reader.buf[: end + 4]
        headers = _parse_headers(headers_block)

        path = stack.enter_context(spool())
        size = 0
        with path.open("wb") as out:
            while True:
                found = reader.buf.find(delimiter)
                if found >= 0:
                    size += found
                    _check_part(size, max_part_bytes, len(parts))
                    out.write(reader.buf[:found])
                    del reader.buf[: found + len(delimiter)]
                    break
                # Keep a tail that could be the start of a delimiter split across reads.
                keep = len(delimiter) - 1
                if len(reader.buf) > keep:
                    flush = len(reader.buf) - keep
                    size += flush
                    _check_part(size, max_part_bytes, len(parts))
                    out.write(reader.buf[:flush])
                    del reader.buf[:flush]
                if not reader.fill():
                    raise MalformedMultipart(
                        "the body ends before the closing multipart boundary (truncated?)"
                    )
        parts.append(SpooledPart(len(parts), headers, path, size))


def _check_part(size: int, limit: int | None, index: int) -> None:
    if limit is not None and size > limit:
        raise PayloadTooLarge(f"part {index + 1} exceeds the limit of {limit} bytes per instance")


def _finish(parts: list[SpooledPart]) -> list[SpooledPart]:
    if not parts:
        raise MalformedMultipart("the multipart body has no parts")
    return parts


def iter_file(path: Path, chunk: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while data := fh.read(chunk):
            yield data
