"""A bandwidth cap for sends to a partner: a token bucket, applied where bytes leave.

District links are slow and shared with everything else the hospital does; a cap
keeps a study going out from taking the whole line. The cap is enforced on the
socket (DICOM) and on the request body (STOW-RS) in slices of a tenth of a second
of traffic, so a large instance trickles out at the cap instead of bursting at
line rate and then pausing.

Only one push per partner runs at a time (see PushStore.begin), so a cap per
push is a cap per partner.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

#: never slice below this (per system call), whatever the rate
_MIN_SLICE = 4096


class TokenBucket:
    """At most ``rate`` bytes per second on average, with bursts of ``burst`` bytes."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("a bandwidth cap is a positive number of bytes per second")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(_MIN_SLICE, rate / 10))
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = threading.Lock()

    @property
    def slice(self) -> int:
        """How many bytes to hand to one system call."""
        return max(_MIN_SLICE, int(self.burst))

    def take(self, amount: int) -> None:
        """Block until ``amount`` bytes may go (amounts above the burst wait their share)."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now
            self._tokens -= amount
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            time.sleep(wait)


def _trim(buffers: Iterable[Any], limit: int) -> list[memoryview]:
    """The first ``limit`` bytes of ``buffers``, as views (no copies)."""
    out: list[memoryview] = []
    left = limit
    for buf in buffers:
        if left <= 0:
            break
        view = memoryview(buf).cast("B")
        if len(view) > left:
            view = view[:left]
        out.append(view)
        left -= len(view)
    return out


class ThrottledSocket:
    """A socket that counts what it sends and, with a bucket, sends no faster than the
    bucket allows; everything else is the socket's own. Paced sends may be partial,
    which every caller (pynetdicom's send loop, ``pacs.scp.sending._send_buffers``)
    already handles."""

    def __init__(self, sock: socket.socket, bucket: TokenBucket | None) -> None:
        self._sock = sock
        self._bucket = bucket
        #: bytes handed to the kernel (what went on the wire, PDU headers included)
        self.sent = 0

    def send(self, data: Any, flags: int = 0) -> int:
        if self._bucket is not None:
            data = memoryview(data).cast("B")[: self._bucket.slice]
            self._bucket.take(len(data))
        count = self._sock.send(data, flags)
        self.sent += count
        return count

    def sendall(self, data: Any, flags: int = 0) -> None:
        view = memoryview(data).cast("B")
        while len(view):
            count = self.send(view, flags)
            view = view[count:]

    def sendmsg(self, buffers: Iterable[Any], *args: Any) -> int:
        if self._bucket is not None:
            buffers = _trim(buffers, self._bucket.slice)
            self._bucket.take(sum(len(b) for b in buffers))
        count = self._sock.sendmsg(buffers, *args)
        self.sent += count
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def throttled(chunks: Iterable[bytes], bucket: TokenBucket | None) -> Iterator[bytes]:
    """``chunks`` re-sliced to the bucket's pace (unchanged without a bucket)."""
    if bucket is None:
        yield from chunks
        return
    step = bucket.slice
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), step):
            piece = view[start : start + step]
            bucket.take(len(piece))
            yield bytes(piece)
