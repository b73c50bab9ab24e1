"""A small stdlib Lambda Runtime API server for the cases an emulator cannot produce.

It hands out queued invocations with whatever headers a test wants (a real
epoch deadline, a trace id) and records every response, error and init error.
"""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PREFIX = "/2018-06-01/runtime"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A function killed mid long-poll resets its connection: expected, not news."""


class RuntimeApiServer:
    def __init__(self) -> None:
        self.pending: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.init_errors: list[dict] = []
        self.answered: set[str] = set()
        self.next_requests = 0
        self.drop_posts = 0  # the next N invocation results are read, then the connection is cut
        self.lose_answers = 0  # the next N invocation results are recorded, then the connection is cut
        self.refuse_next = False  # GET .../next answers 500
        self.first_next_at: float | None = None  # time.perf_counter() of the first GET .../next
        self.last_result_at: float | None = None  # and of the latest response or error
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall

            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, body: bytes = b"{}", headers: dict | None = None) -> None:
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404)
                owner.next_requests += 1
                if owner.refuse_next:
                    return self._reply(500)
                owner.first_next_at = owner.first_next_at or time.perf_counter()
                request_id, payload, headers = owner.pending.get()
                headers = {"Lambda-Runtime-Aws-Request-Id": request_id, **headers}
                self._reply(200, json.dumps(payload).encode(), headers)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"null")
                if self.path == f"{PREFIX}/init/error":
                    owner.init_errors.append(
                        {"body": body, "type": self.headers.get("Lambda-Runtime-Function-Error-Type")}
                    )
                    return self._reply(202)
                parts = self.path[len(PREFIX) :].split("/")
                if owner.drop_posts > 0:
                    owner.drop_posts -= 1
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return None
                if len(parts) == 4 and parts[1] == "invocation" and parts[3] in ("response", "error"):
                    if parts[2] in owner.answered:  # as Lambda does: one result per invocation
                        return self._reply(400, b'{"errorType":"InvalidStateTransition"}')
                    owner.answered.add(parts[2])
                    error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
                    owner.results.put((parts[2], parts[3], body, error_type))
                    owner.last_result_at = time.perf_counter()
                    if owner.lose_answers > 0:
                        owner.lose_answers -= 1
                        self.connection.shutdown(socket.SHUT_RDWR)
                        self.close_connection = True
                        return None
                    return self._reply(202)
                return self._reply(404)

        self.server = _QuietServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def invoke(self, request_id: str, payload, headers: dict | None = None, timeout: float = 60):
        """Queue one invocation and wait for its outcome: (id, 'response'|'error', body, error type)."""
        self.pending.put((request_id, payload, headers or {}))
        return self.results.get(timeout=timeout)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
