"""What every part of the local broker uses: its error, its host, a progress line, a file lock, port checks."""

from __future__ import annotations

import contextlib
import fcntl
import socket
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"


class BrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped."""


def bootstrap_of(port: int) -> str:
    return f"{HOST}:{port}"


def console(quiet: bool):
    if quiet:
        return None
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def spinner(quiet: bool, message: str) -> Iterator[None]:
    """`message` with a spinner on stderr while the block runs (nothing when `quiet`)."""
    shown = console(quiet)
    if shown is None:
        yield
        return
    with shown.status(message):
        yield


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True
