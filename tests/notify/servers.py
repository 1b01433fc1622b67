"""A real SMTP server (aiosmtpd) and a real HTTP webhook receiver on 127.0.0.1, for the notification tests."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """aiosmtpd handler: keeps every accepted message; can refuse (4xx) for a while, or call a hook per recipient."""

    def __init__(self):
        self.messages: list[EmailMessage] = []
        self.refuse_until = 0.0  # time.monotonic() before which every message is deferred with 451
        self.refuse_first = 0  # and so are the first this many messages
        self.refused = 0
        self.on_rcpt: Callable[[int], None] | None = None  # called with the count of RCPTs seen so far
        self.delay_s = 0.0
        self.rcpts = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpts += 1
            count = self.rcpts
        if self.on_rcpt:
            self.on_rcpt(count)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if time.monotonic() < self.refuse_until or self.refused < self.refuse_first:
            self.refused += 1
            return "451 4.3.0 Mail server temporarily rejected message, try again later"
        if self.delay_s:
            import asyncio
            await asyncio.sleep(self.delay_s)
        message = message_from_bytes(envelope.content, policy=policy.default)
        with self.lock:
            self.messages.append(message)
        return "250 2.0.0 Ok: queued"

    def by_message_id(self) -> dict[str, list[EmailMessage]]:
        out: dict[str, list[EmailMessage]] = {}
        with self.lock:
            for m in self.messages:
                out.setdefault(m["Message-ID"], []).append(m)
        return out


class SmtpServer:
    def __init__(self):
        self.mailbox = Mailbox()
        self.port = free_port()
        self.controller = Controller(self.mailbox, hostname="127.0.0.1", port=self.port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?timeout=10"

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()


class WebhookReceiver:
    """An HTTP server that records every POSTed JSON body by path; answers 500 while `failing` is set."""

    def __init__(self):
        self.posts: list[tuple[str, dict]] = []
        self.failing = False
        self.fail_first = 0  # answer 500 to the first this many posts
        self.failed = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.failing or receiver.failed < receiver.fail_first:
                    receiver.failed += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"1")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
