"""A webhook receiver on loopback for the alert tests (unit and integration)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """A webhook receiver on loopback that answers `codes` in turn (then 200) and keeps the bodies."""

    def __init__(self, codes: list[int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.codes = list(codes or [])
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = outer.codes.pop(0) if outer.codes else 200
                if code == 200:
                    outer.bodies.append(body)
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
