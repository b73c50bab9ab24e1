"""Servers the benchmark starts for itself on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not start within {timeout}s")


def _listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


class SeaweedFS:
    """`weed mini`: a fast S3 server (signatures checked, no notifications)."""

    def __init__(self, weed: str, access_key: str = "test", secret_key: str = "test") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bench-seaweed-"))
        ports = [free_port() for _ in range(5)]
        self.s3_port = ports[3]
        (self.dir / "s3.json").write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "admin",
                            "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                            "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                        }
                    ]
                }
            )
        )
        d = str(self.dir)
        command = [
            weed, "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={ports[0]}", f"-volume.port={ports[1]}", f"-filer.port={ports[2]}",
            f"-s3.port={ports[3]}", f"-s3.config={d}/s3.json", "-admin.ui=false", f"-admin.port={ports[4]}",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-filer.localSocket={d}/filer.sock", f"-s3.localSocket={d}/s3.sock",
        ]  # fmt: skip
        self.log = open(self.dir / "weed.log", "wb")  # noqa: SIM115 - closed in stop()
        command[0] = os.path.abspath(weed)
        self.process = subprocess.Popen(command, cwd=d, stdout=self.log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.s3_port}"
        wait_for(lambda: _listening(self.s3_port), 30, "SeaweedFS")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Moto:
    def __init__(self, moto_server: str) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            [moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).status == 200, 30, "moto")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


def environment(url: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {
        **keep,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
    }
