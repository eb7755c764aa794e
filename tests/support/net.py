"""Loopback ports: pick free ones, and wait for a server to listen on one."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

LOCALHOST = "127.0.0.1"

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now.

    The kernel picks it (bind to port 0). The socket is closed before returning,
    so another process could take the port in between; to make that unlikely
    within one test run, a port is never handed out twice by this process.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port


def port_is_open(host: str, port: int, timeout: float = 0.2) -> bool:
    """True when a TCP connection to ``host:port`` is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ServerDidNotStart(RuntimeError):
    """A server process exited or never listened; the message carries its log."""


def _tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])


def wait_for_port(
    host: str,
    port: int,
    timeout: float = 15.0,
    *,
    process: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Return once ``host:port`` accepts connections; raise ServerDidNotStart otherwise.

    Polls the socket (no fixed sleeps). When the server's ``process`` is given,
    its early exit is reported at once instead of after the timeout, with the
    tail of ``log`` in the message.
    """
    deadline = time.monotonic() + timeout
    interval = 0.01
    while True:
        if port_is_open(host, port):
            if process is not None and process.poll() is not None:
                # Someone else listens there and our server died on "address in use".
                raise ServerDidNotStart(
                    f"{process.args!r} exited with {process.returncode}, yet {host}:{port} "
                    f"is open: another process owns the port\n{_tail(log)}"
                )
            return
        if process is not None and process.poll() is not None:
            raise ServerDidNotStart(
                f"{process.args!r} exited with {process.returncode} before listening on "
                f"{host}:{port}\n{_tail(log)}"
            )
        if time.monotonic() >= deadline:
            raise ServerDidNotStart(
                f"nothing listened on {host}:{port} within {timeout:.0f} s\n{_tail(log)}"
            )
        # Back off a little between connection attempts; this is a poll, not a wait.
        time.sleep(interval)
        interval = min(interval * 2, 0.2)


def stop_process(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate ``process`` (SIGTERM), then kill it if it has not exited in ``timeout``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
