"""The DICOM service: our Application Entity on a listening socket.

The socket is created by the process supervisor and shared by every worker
process (pre-fork), so several modalities sending at once use every core.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from functools import partial
from typing import Any

from pydicom import config as pydicom_config
from pynetdicom import AE, _config
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from pacs.archive import Archive
from pacs.config import Settings
from pacs.scp import move_guard, receive, sending, tuning
from pacs.scp.handlers import ScpContext, bindings, receive_store
from pacs.scp.peers import Peers

log = logging.getLogger(__name__)

#: How long a new connection may stay silent before we drop it (PS3.8 ARTIM).
REQUEST_WAIT_S = 10.0
# Before accepting, a worker waits this long per association it already serves
# (at most BUSY_ACCEPT_MAX_S), so that an idler worker takes the connection.
BUSY_ACCEPT_DELAY_S = 0.005
BUSY_ACCEPT_MAX_S = 0.015

QUERY_RETRIEVE = (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
)
QR_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
]


class PacsAE(AE):
    """An AE whose list of admitted calling AE titles is the live registry."""

    def __init__(self, ae_title: str, peers: Peers) -> None:
        super().__init__(ae_title)
        self._peers = peers

    @property  # type: ignore[override]
    def require_calling_aet(self) -> list[str]:
        return self._peers.calling_allowlist()

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        raise AttributeError("calling AE titles come from the registry (pacs ae add)")


class SharedSocketServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, accepting on a socket it did not create."""

    def __init__(self, listener: socket.socket, ae: AE, **kwargs: Any) -> None:
        self._listener = listener
        self._count_lock = threading.Lock()
        self._connections = 0
        super().__init__(ae, listener.getsockname()[:2], **kwargs)

    def server_bind(self) -> None:
        self.socket.close()
        self.socket = self._listener
        # Other workers accept on the same socket: whoever loses the race must not block.
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Already listening (the supervisor called listen)."""

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Hand a connection to pynetdicom only once its A-ASSOCIATE-RQ has started.

        pynetdicom counts an association from the moment it accepts the TCP
        connection and, for one that closes or stays silent, holds that slot until
        its ACSE timeout: 70 port probes (a monitoring check, a load balancer) were
        enough to lock modalities out. Waiting here holds no slot.
        """
        try:
            try:
                readable, _, _ = select.select([request], [], [], REQUEST_WAIT_S)
                first = request.recv(1, socket.MSG_PEEK) if readable else b""
            except OSError:
                first = b""
            if not first:
                log.debug("connection from %s closed before an association request", client_address)
                self.shutdown_request(request)
                return
            super().process_request_thread(request, client_address)
        finally:
            with self._count_lock:
                self._connections -= 1

    def get_request(self) -> tuple[socket.socket, Any]:
        # Every worker wakes when a connection arrives and the first to accept
        # wins: four modalities sending at once were often split 3/1 between two
        # workers, leaving one core idle while the other worker's GIL carried three.
        # Connections count from their accept: their associations start later.
        busy = self._connections + len(self.ae.active_associations)
        if busy:
            time.sleep(min(BUSY_ACCEPT_DELAY_S * busy, BUSY_ACCEPT_MAX_S))
        client, address = self._listener.accept()
        with self._count_lock:
            self._connections += 1
        client.setblocking(True)
        tuning.set_nodelay(client)
        return client, address

    def server_close(self) -> None:
        """The listener belongs to the supervisor; only stop using it."""

    def service_actions(self) -> None:
        """pynetdicom runs a full ``gc.collect()`` here every 60 turns of the accept
        loop; with our heap that stalls every thread for tens of milliseconds (23 %
        of the busy time in an echo benchmark). Python's own collector suffices."""


def build_ae(settings: Settings, peers: Peers) -> PacsAE:
    ae = PacsAE(settings.ae_title, peers)
    ae.require_called_aet = True
    ae.maximum_pdu_size = settings.max_pdu_size
    ae.dimse_timeout = settings.dimse_timeout_s
    ae.network_timeout = settings.network_timeout_s
    ae.acse_timeout = 30
    ae.maximum_associations = 64
    ae.add_supported_context(Verification, QR_SYNTAXES)
    for sop_class in QUERY_RETRIEVE:
        ae.add_supported_context(sop_class, QR_SYNTAXES)
    return ae


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings (workers call this once)."""
    # Spool received data sets to disk instead of memory: large multi-frame
    # objects would otherwise each cost their size in RAM.
    _config.STORE_RECV_CHUNKED_DATASET = True
    # Accept every storage SOP class, including private and future ones, in the
    # transfer syntax the modality offers first.
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    _config.LOG_HANDLER_LEVEL = "none"
    # pynetdicom pretty-prints every identifier for its debug log even when that
    # log is off: a third of the cost of each C-FIND response.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    # Our index values are validated at ingest; re-validating every element of
    # every command set and C-FIND response costs a fifth of pynetdicom's time.
    pydicom_config.settings.writing_validation_mode = pydicom_config.IGNORE
    tuning.install()
    receive.install()
    sending.install()
    move_guard.install()


class DicomService:
    """Runs the SCP on a shared listening socket until asked to stop."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        configure_pynetdicom()
        self.settings = settings
        self.archive = archive
        self.peers = Peers(archive, accept_unknown=settings.accept_unknown_aes)
        self.context = ScpContext(archive, self.peers, settings.ae_title)
        self.ae = build_ae(settings, self.peers)
        receive.enable(self.ae, partial(receive_store, self.context), archive.spool_dir)
        self.server: SharedSocketServer | None = None
        self._thread: threading.Thread | None = None

    def warm_up(self) -> None:
        """Do once, before the first association, what it would otherwise wait for:
        open the database, compile the statements of the hot paths."""
        started = time.perf_counter()
        self.peers.calling_allowlist()
        self.archive.index.existing("1.2")
        self.archive.index.check()
        log.debug("DICOM service warmed up in %.0f ms", (time.perf_counter() - started) * 1000)

    def start(self, listener: socket.socket) -> None:
        self.warm_up()
        server = SharedSocketServer(
            listener,
            self.ae,
            ae_title=self.settings.ae_title,
            contexts=self.ae.supported_contexts,
            evt_handlers=bindings(self.context),
        )
        self.ae._servers.append(server)
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.2},
            name="dicom-accept",
            daemon=True,
        )
        self._thread.start()

    def active_associations(self) -> int:
        return len(self.server.active_associations) if self.server else 0

    def stop(self, grace_s: float) -> None:
        """Stop accepting; let open associations finish for ``grace_s``, then refuse
        further stores and abort what is left."""
        if self.server is None:
            return
        self.server.shutdown()
        deadline = time.monotonic() + grace_s
        while self.active_associations() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.archive.stop_accepting()
        remaining = list(self.server.active_associations)
        if remaining:
            log.warning("aborting %d association(s) still open at shutdown", len(remaining))
            for assoc in remaining:
                assoc.abort()
