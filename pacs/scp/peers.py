"""Which remote AEs may talk to us and what they may do, cached for a few seconds.

Every association and every request asks; the registry lives in the index (so
`pacs ae add` on any node takes effect everywhere), and a short cache keeps the
lookups off the hot path.

An AE whose study scope is "shared" (a partner hospital, see
``pacs/storage/consult_models.py``) sees only the studies shared with its partner:
:meth:`Peers.study_scope` gives them as ``Query.study_scope`` /
``Archive.instances(study_scope=...)`` take them.
"""

from __future__ import annotations

import threading
import time
from typing import Literal

from pacs.archive import Archive
from pacs.storage.consult_models import ShareStore
from pacs.storage.index import RemoteNode

Action = Literal["store", "query", "retrieve", "destination"]
_FLAG = {
    "store": "can_store",
    "query": "can_query",
    "retrieve": "can_retrieve",
    "destination": "is_destination",
}
# Not an AE title anyone can send: backslash is outside the AE character repertoire.
_NOBODY = "\\nobody\\"


class Peers:
    def __init__(self, archive: Archive, *, accept_unknown: bool, ttl_s: float = 2.0) -> None:
        self.archive = archive
        self.accept_unknown = accept_unknown
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._nodes: dict[str, RemoteNode] = {}
        self._loaded_at = -1e9
        self._seen: dict[str, float] = {}
        self._shares = ShareStore(archive.index.engine)
        self._scopes: dict[str, tuple[float, list[int]]] = {}

    def _refresh(self) -> dict[str, RemoteNode]:
        now = time.monotonic()
        with self._lock:
            if now - self._loaded_at > self.ttl_s:
                self._nodes = {n.ae_title: n for n in self.archive.nodes()}
                self._loaded_at = now
            return self._nodes

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = -1e9
            self._scopes.clear()

    def get(self, ae_title: str) -> RemoteNode | None:
        return self._refresh().get(ae_title.strip())

    def allows(self, ae_title: str, action: Action) -> bool:
        node = self.get(ae_title)
        if node is None:
            # An unknown AE has no address, so it can never be a move destination.
            return self.accept_unknown and action != "destination"
        return bool(getattr(node, _FLAG[action]))

    def study_scope(self, ae_title: str) -> list[int] | None:
        """The studies (index keys) the AE may query and retrieve; None means all.

        An AE with scope "shared" sees the studies shared with its partner hospital
        (none if it is no partner's); every other AE sees everything, as before.
        """
        node = self.get(ae_title)
        if node is None or node.study_scope != "shared":
            return None
        now = time.monotonic()
        with self._lock:
            cached = self._scopes.get(node.ae_title)
            if cached is not None and now - cached[0] <= self.ttl_s:
                return cached[1]
        pks = self._shares.study_pks_for_ae(node.ae_title)
        with self._lock:
            self._scopes[node.ae_title] = (now, pks)
        return pks

    def calling_allowlist(self) -> list[str]:
        """The list pynetdicom checks calling AE titles against ([] admits everyone)."""
        if self.accept_unknown:
            return []
        return list(self._refresh()) or [_NOBODY]

    def seen(self, ae_title: str) -> None:
        """Record the node's last contact, at most once a minute per node."""
        now = time.monotonic()
        with self._lock:
            if now - self._seen.get(ae_title, -1e9) < 60:
                return
            self._seen[ae_title] = now
        if self.get(ae_title) is not None:
            self.archive.seen_node(ae_title)
