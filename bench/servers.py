"""Servers the benchmark starts for itself on 127.0.0.1, stopped by PID.

SeaweedFS (signatures checked) is the tests' own `tests/seaweedfs.py`; moto is
started here. Both accept the one identity in CREDENTIALS.
"""

from __future__ import annotations

import os
import subprocess
import urllib.request

import seaweedfs

from helpers import free_port, wait_until

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": seaweedfs.ACCESS_KEY,
    "AWS_SECRET_ACCESS_KEY": seaweedfs.SECRET_KEY,
    "AWS_DEFAULT_REGION": seaweedfs.REGION,
}


class Moto:
    def __init__(self, moto_server: str) -> None:
        port = free_port()
        self.process = subprocess.Popen(
            [moto_server, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.url = f"http://127.0.0.1:{port}"
        wait_until(lambda: urllib.request.urlopen(f"{self.url}/moto-api/", timeout=2).status == 200, 30, "moto")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(15)


def environment(url: str) -> dict:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**keep, **CREDENTIALS, "AWS_ENDPOINT_URL": url}
