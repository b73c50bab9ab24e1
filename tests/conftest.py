"""Shared helpers: real servers on 127.0.0.1, started and stopped by PID."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import AWS_ENV, ROOT, free_port, http_ok, unique, wait_until

sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def moto_url():
    """One moto server for the session; tests isolate themselves by unique names."""
    port = free_port()
    log = open(os.environ.get("MOTO_LOG", os.devnull), "wb")  # noqa: SIM115 - lives as long as the server
    server = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: http_ok(f"{url}/moto-api/"), 30, "moto server")
        yield url
    finally:
        server.terminate()
        server.wait(10)
        log.close()


@pytest.fixture(scope="session")
def aws_env(moto_url):
    """The environment a bridge process needs to reach moto."""
    env = {**AWS_ENV, "AWS_ENDPOINT_URL": moto_url}
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        os.environ.pop(name, None)
    os.environ.update(env)
    return env


@pytest.fixture(scope="session")
def clients(aws_env):
    import boto3

    session = boto3.session.Session()
    return {name: session.client(name) for name in ("s3", "sqs", "sns", "events")}


@pytest.fixture
def s3(clients):
    return clients["s3"]


@pytest.fixture
def sqs(clients):
    return clients["sqs"]


@pytest.fixture
def bucket(s3):
    name = unique("bkt")
    s3.create_bucket(Bucket=name)
    return name
