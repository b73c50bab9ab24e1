"""An HTTP proxy in front of moto that injects the faults a test asks for.

It forwards every request to the real server and can instead: refuse
everything (the server is down), cut a response after N body bytes (the
server died mid-download), cut a request after N body bytes (mid-upload),
answer 503 SlowDown (throttling) or any status a test picks, rewrite an SQS
JSON request, hold the requests a test picks until it heals the proxy (a
phase that hangs), or close each connection after its answer (as a server
ending an idle keep-alive connection). It records what it served, and who
asked (the User-Agent).
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}
SLOW_DOWN = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code><Message>Slow down</Message></Error>"


class FaultyProxy:
    def __init__(self, upstream: str, keep_host: bool = False) -> None:
        self.upstream = upstream.split("://", 1)[-1]
        self.keep_host = keep_host  # a server that checks signatures (SeaweedFS) must see the Host signed
        self.down = False
        self.cut_responses_after: int | None = None
        self.cut_requests_after: int | None = None
        self.throttle = 0
        self.rewrite_sqs = None  # (target, body dict) -> body dict
        self.stall = None  # (method, path) -> bool: hold that request until heal() or close()
        self.answer = None  # (method, path) -> status, (status, code) or None: answer that instead of forwarding
        self.close_each = False
        self.lose = None  # (method, path, X-Amz-Target) -> bool: forward it, then drop the answer
        self.agents: list[str] = []
        self.stalled: list[tuple[str, str]] = []
        self.released = threading.Event()
        self.served: list[tuple[str, str, int]] = []
        self.requests: list[tuple[str, str, dict]] = []  # method, path and headers of each request forwarded
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms delayed-ACK stall

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if owner.stall and owner.stall(self.command, self.path):
                    with owner.lock:
                        owner.stalled.append((self.command, self.path))
                    owner.released.wait(120)
                if owner.down:
                    return self._drop()
                if owner.cut_requests_after is not None and length > owner.cut_requests_after:
                    self.rfile.read(owner.cut_requests_after)
                    owner._record(self.command, self.path, -1)
                    return self._drop()
                body = self.rfile.read(length) if length else None
                with owner.lock:
                    owner.agents.append(self.headers.get("User-Agent", ""))
                    throttled = owner.throttle > 0
                    owner.throttle -= throttled
                    planned = owner.answer and owner.answer(self.command, self.path)
                if planned:  # a status, or (status, S3 error code)
                    status, code = planned if isinstance(planned, tuple) else (planned, "Planned")
                    owner._record(self.command, self.path, status)
                    body = f"<Error><Code>{code}</Code></Error>".encode()
                    return self._answer(status, {"Content-Type": "application/xml"}, body)
                if throttled:
                    owner._record(self.command, self.path, 503)
                    return self._answer(503, {"Content-Type": "application/xml"}, SLOW_DOWN)
                target = self.headers.get("X-Amz-Target", "")
                if owner.rewrite_sqs and target and body:
                    body = json.dumps(owner.rewrite_sqs(target, json.loads(body))).encode()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
                with owner.lock:
                    owner.requests.append((self.command, self.path, dict(headers)))
                # moto reads other hosts as virtual-hosted buckets; SeaweedFS checks the Host that was signed
                headers["Host"] = self.headers.get("Host", owner.upstream) if owner.keep_host else owner.upstream
                if body is not None:
                    headers["Content-Length"] = str(len(body))
                upstream = http.client.HTTPConnection(owner.upstream, timeout=60)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    answer_headers = {k: v for k, v in answer.getheaders() if k.lower() not in HOP_BY_HOP}
                finally:
                    upstream.close()
                owner._record(self.command, self.path, answer.status)
                if owner.lose and owner.lose(self.command, self.path, target):
                    return self._drop()
                cut = owner.cut_responses_after
                if cut is not None and len(data) > cut and self.command == "GET":
                    return self._answer(answer.status, answer_headers, data, send=cut)
                self._answer(answer.status, answer_headers, data)

            def _answer(self, status: int, headers: dict, data: bytes, send: int | None = None) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data if send is None else data[:send])
                if send is not None:
                    self._drop()
                elif owner.close_each:
                    self.close_connection = True

            def _drop(self) -> None:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *args: None
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _record(self, method: str, path: str, status: int) -> None:
        with self.lock:
            self.served.append((method, path, status))

    def heal(self) -> None:
        self.down = False
        self.cut_responses_after = self.cut_requests_after = None
        self.throttle = 0
        self.rewrite_sqs = None
        self.stall = self.answer = self.lose = None
        self.close_each = False
        self.released.set()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
