"""Helpers for the STT tests: a local HTTP server to fetch audio from, and word error rate."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """What the server answers at a path: ``body`` with ``status``, or a redirect to ``location``.

    ``declare_length=False`` sends no Content-Length (the body ends when the connection closes), so a client
    cannot refuse a large body from its header and must count the bytes as they come.
    """

    body: bytes = b""
    status: int = 200
    location: str | None = None
    declare_length: bool = True


@contextmanager
def serve_routes(routes: dict[str, Route]) -> Iterator[str]:
    """Serve ``routes`` on 127.0.0.1 from a thread; yields the base URL (``http://127.0.0.1:PORT``)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
            route = routes.get(self.path, Route(b"not found", 404))
            self.send_response(route.status)
            if route.location is not None:
                self.send_header("Location", route.location)
            if route.declare_length:
                self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
