"""A thread-safe least-recently-used cache with a byte budget, for decoded frames and images.

Each ``pacs serve`` worker process keeps its own caches: they only save work, so
nothing depends on what another process has cached. Several request threads may
ask for the same missing entry at once (the viewer loads a series with parallel
requests while a prefetch runs); :meth:`ByteLRU.get_or_load` lets one of them do
the work and hands the result to the others ("single flight"), so a frame is
never decoded twice at the same time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class CacheStats:
    name: str
    entries: int
    bytes: int
    budget: int
    hits: int
    misses: int
    evictions: int


class _Pending:
    """A load in progress that other threads may wait for."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: object = None
        self.error: BaseException | None = None


class ByteLRU(Generic[K, V]):
    """Keeps values until their total size passes ``budget`` bytes, dropping the least used.

    ``sizeof(value)`` gives a value's size in bytes. A value larger than the whole
    budget is returned to the caller but never kept. All methods are thread-safe.
    """

    def __init__(self, budget: int, sizeof: Callable[[V], int], *, name: str = "cache") -> None:
        if budget < 0:
            raise ValueError("budget must be >= 0")
        self.name = name
        self._budget = budget
        self._sizeof = sizeof
        self._lock = threading.Lock()
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._pending: dict[K, _Pending] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0

    # ------------------------------------------------------------ reading

    def get(self, key: K) -> V | None:
        """The cached value (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def __contains__(self, key: K) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def get_or_load(self, key: K, load: Callable[[], V]) -> V:
        """The cached value, or ``load()``'s result, cached.

        If another thread is already loading ``key`` this waits for its result
        instead of loading again. An exception from ``load`` reaches every
        waiting caller and nothing is cached, so the next call tries again.
        """
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                self._hits += 1
                return item[0]
            self._misses += 1
            pending = self._pending.get(key)
            leader = pending is None
            if pending is None:
                pending = self._pending[key] = _Pending()
        if not leader:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value  # type: ignore[return-value]
        try:
            value = load()
        except BaseException as exc:
            pending.error = exc
            with self._lock:
                del self._pending[key]
            pending.done.set()
            raise
        pending.value = value
        with self._lock:
            del self._pending[key]
            self._store(key, value)
        pending.done.set()
        return value

    # ------------------------------------------------------------ writing

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` under ``key`` (replacing any older value), evicting as needed."""
        with self._lock:
            self._store(key, value)

    def discard(self, key: K) -> None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def budget(self) -> int:
        return self._budget

    def set_budget(self, budget: int) -> None:
        """Change the budget; shrinking evicts at once."""
        if budget < 0:
            raise ValueError("budget must be >= 0")
        with self._lock:
            self._budget = budget
            self._evict()

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                self.name,
                len(self._items),
                self._bytes,
                self._budget,
                self._hits,
                self._misses,
                self._evictions,
            )

    # ------------------------------------------------------------ internals

    def _store(self, key: K, value: V) -> None:
        # Called with the lock held.
        size = max(0, int(self._sizeof(value)))
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old[1]
        if size > self._budget:
            return
        self._items[key] = (value, size)
        self._bytes += size
        self._evict()

    def _evict(self) -> None:
        while self._bytes > self._budget and self._items:
            _, (_, size) = self._items.popitem(last=False)
            self._bytes -= size
            self._evictions += 1
