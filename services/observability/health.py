"""`/metrics`, `/healthz` and `/readyz` on one small HTTP server inside the service's event loop.

- `/healthz`: the process is alive and its event loop answers (200).
- `/readyz`: 200 when the store and the broker answer, this process has input partitions
  assigned, and its consumer is not stalled; 503 with the reasons otherwise. Each request
  checks afresh (with short time limits), so a stopped database or broker shows within seconds.
- `/metrics`: the Prometheus text format of the process's registry.
Any other path is 404. Served in the event loop, not a thread: a loop that no longer answers is
exactly what a liveness probe should see.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.observability.metrics import READY

log = logging.getLogger("onevoice.health")
ReadinessCheck = Callable[[], Awaitable[list[str]]]  # the reasons for not being ready; empty: ready


class PortBusy(OSError):
    """The configured metrics port is taken by another process."""

    def __init__(self, host: str, port: int):
        super().__init__(errno.EADDRINUSE, f"{host}:{port} is already in use")
        self.host, self.port = host, port


class HealthServer:
    def __init__(self, host: str, port: int, readiness: ReadinessCheck, registry=REGISTRY):
        self.host, self.port = host, port
        self.readiness = readiness
        self.registry = registry
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortBusy(self.host, self.port) from exc
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%d/ (/metrics, /healthz, /readyz)", self.host, self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            method, _, rest = request.split(b"\r\n", 1)[0].decode("latin-1").partition(" ")
            path = rest.split(" ", 1)[0].split("?", 1)[0]
            status, content_type, body = await self._respond(method, path)
            head = (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n").encode()
            writer.write(head + (b"" if method == "HEAD" else body))
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str) -> tuple[str, str, bytes]:
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status": "alive"}\n'
        if path == "/readyz":
            problems = await self.readiness()
            READY.set(0 if problems else 1)
            body = json.dumps({"status": "unready" if problems else "ready", "problems": problems}).encode() + b"\n"
            return ("503 Service Unavailable" if problems else "200 OK"), "application/json", body
        return "404 Not Found", "text/plain", b"not found: try /metrics, /healthz or /readyz\n"
