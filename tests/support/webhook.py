"""A local webhook receiver for the dispatch tests: checks each request's signature, records what it got, and
can be taken down and brought back on the same port."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    def __init__(self, secret: str | None, *, delay_s: float = 0.0) -> None:
        """`secret` None: accept unsigned requests (a chat robot's endpoint)."""
        self.secret = secret
        self.delay_s = delay_s
        self.received: list[dict[str, Any]] = []  # {"key", "event", "body", "at"}
        self.bad_signatures = 0
        self.lock = threading.Lock()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                secret = receiver.secret
                # The check docs/using.md's "Ticket webhooks" documents: HMAC-SHA256 of "{timestamp}." + body, and a
                # timestamp within five minutes of the receiver's clock.
                stamp = self.headers.get("X-Lamplighter-Timestamp", "")
                signed = stamp.encode() + b"." + body
                want = "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest() if secret else ""
                fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= 300
                if secret and not (
                    fresh and hmac.compare_digest(want, self.headers.get("X-Lamplighter-Signature", ""))
                ):
                    with receiver.lock:
                        receiver.bad_signatures += 1
                    self.send_response(401)
                    self.end_headers()
                    return
                if receiver.delay_s:
                    time.sleep(receiver.delay_s)
                with receiver.lock:
                    receiver.received.append(
                        {
                            "key": self.headers.get("Idempotency-Key"),
                            "event": int(self.headers.get("X-Lamplighter-Event", "0")),
                            "body": json.loads(body),
                            "at": time.monotonic(),
                        }
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        ThreadingHTTPServer.request_queue_size = 128  # the dispatcher delivers in parallel
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def keys(self) -> list[str]:
        with self.lock:
            return [r["key"] for r in self.received]
