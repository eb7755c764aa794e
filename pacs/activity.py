"""When the node last served someone, so that background work can keep out of the way.

Prebuilding DICOMweb metadata after a study arrives parses every instance again:
seconds of CPU. Profiled in a one-worker node moving a study just received, the
builder held the GIL in half the samples. Foreground work calls
:func:`touch`; background work calls :func:`yield_to_foreground` between its
steps, which waits a little while the node is busy. The last-touched time lives
in memory shared by all the workers of ``pacs serve`` (:func:`share`, before
they fork), because one worker's housekeeping takes CPU from the other's
requests as much as from its own.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import time
from typing import Any

#: the node counts as busy this long after its last foreground work
QUIET_S = 0.5
#: background work waits at most this long per step, so it always progresses
MAX_WAIT_S = 1.0

_last: Any = ctypes.c_double(0.0)


def share() -> None:
    """Keep the time in shared memory (call before forking the workers)."""
    global _last
    shared = multiprocessing.RawValue(ctypes.c_double, _last.value)
    _last = shared


def touch() -> None:
    """Foreground work is happening now."""
    _last.value = time.monotonic()


def idle_for() -> float:
    """Seconds since the last foreground work (of any worker)."""
    return time.monotonic() - _last.value


def yield_to_foreground(quiet_s: float = QUIET_S, max_wait_s: float = MAX_WAIT_S) -> float:
    """Wait until the node has been idle for ``quiet_s`` (at most ``max_wait_s``);
    returns the seconds waited."""
    started = time.monotonic()
    deadline = started + max_wait_s
    while True:
        now = time.monotonic()
        busy_left = quiet_s - (now - _last.value)
        if busy_left <= 0 or now >= deadline:
            return now - started
        time.sleep(min(busy_left, deadline - now))
