"""A real HTTP webhook receiver on a free loopback port, for tests and benches.

Blocking (its own threads), so it serves a `serve` subprocess and an in-process trio
deliverer alike.  Each request is verified (`mailbridge.webhooks.signing.verify`) and
answered according to `script` (one action per request, in order; then `default`):

- an int: answer that status;
- "ok": answer 200;
- "hang": never answer (sleep `hang_seconds`);
- "hang_close": stop listening (new connections are refused), then never answer.

Every answered-2xx request is a `Delivery` in `delivered`; `attempts` counts every request.
HTTP/1.0, one request per connection.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from mailbridge.webhooks import signing


@dataclass(frozen=True)
class Delivery:
    event_id: int
    header_id: str | None
    type: str
    account_id: int | None
    body: dict[str, Any]
    valid: bool
    at: float  # time.monotonic() when it arrived


@dataclass
class Receiver:
    secret: str
    script: list[Any] = field(default_factory=list)
    default: Any = "ok"
    hang_seconds: float = 3600.0
    delay: float = 0.0  # seconds before each answer
    port: int = 0
    delivered: list[Delivery] = field(default_factory=list)
    attempts: int = 0
    invalid: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> "Receiver":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping = True
        self.close()

    def open(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, addr = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, addr), daemon=True).start()

    def _next_action(self) -> Any:
        with self._lock:
            self.attempts += 1
            return self.script.pop(0) if self.script else self.default

    def _handle(self, conn: socket.socket, addr: Any) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                action = receiver._next_action()
                if action in ("hang", "hang_close"):
                    if action == "hang_close":
                        receiver.close()
                    time.sleep(receiver.hang_seconds)
                    return
                if receiver.delay:
                    time.sleep(receiver.delay)
                status = 200 if action == "ok" else int(action)
                if 200 <= status < 300:
                    receiver._record(raw, self.headers.get(signing.HEADER), self.headers.get(signing.EVENT_ID_HEADER))
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"no")

        try:
            Handler(conn, addr, None)  # type: ignore[arg-type]
        except OSError:
            pass  # the client gave up (a timeout)
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def _record(self, raw: bytes, signature: str | None, header_id: str | None) -> None:
        body = json.loads(raw)
        valid = signing.verify(self.secret, signature, raw, time.time())
        with self._lock:
            if not valid:
                self.invalid += 1
            self.delivered.append(Delivery(body["id"], header_id, body["type"], body.get("account_id"), body,
                                           valid, time.monotonic()))

    def ids(self) -> list[int]:
        with self._lock:
            return [d.event_id for d in self.delivered]

    def wait_for(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.attempts} attempt(s), "
                                     f"{len(self.delivered)} delivered")
            time.sleep(0.02)


__all__ = ["Delivery", "Receiver"]
