"""The bridge as a real process, served by a Runtime API emulator or test server."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import ROOT, free_port, wait_until
from runtime_api import RuntimeApiServer

BIN = Path(sys.executable).parent


ZIPAPP = ROOT / "dist" / "bootstrap"


@pytest.fixture(scope="session")
def zipapp(tmp_path_factory):
    """A copy of the built zipapp outside the source tree, with its own empty cache."""
    if not ZIPAPP.exists():
        pytest.fail("dist/bootstrap is missing: run build_zipapp.sh (tests/run.sh does)")
    folder = tmp_path_factory.mktemp("zipapp")
    shutil.copy2(ZIPAPP, folder / "bootstrap")
    return folder / "bootstrap", folder / "cache"


@pytest.fixture(params=["bridge.py", "zipapp"])
def program(request):
    """Every build of the bridge the e2e tests must pass against: (command, extra env)."""
    if request.param == "bridge.py":
        return [sys.executable, str(ROOT / "bridge.py")], {}
    path, cache = request.getfixturevalue("zipapp")
    return [sys.executable, "-I", "-S", str(path)], {"S3_EVENT_BRIDGE_CACHE": str(cache)}


class Function:
    """A running bridge process; its stderr is kept for assertions on the log."""

    def __init__(self, command, env, log_path):
        self.log_path = log_path
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT)

    def output(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def stop(self) -> int | None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


@pytest.fixture
def start_function(program, aws_env, tmp_path):
    started = []

    command, program_env = program

    def start(runtime_api: str, handler=(), **settings):
        """Start the function with only what Lambda would set (plus moto's endpoint)."""
        env = {"PATH": os.environ["PATH"], "AWS_LAMBDA_FUNCTION_NAME": "_", **aws_env, **program_env, **settings}
        env["AWS_LAMBDA_RUNTIME_API"] = runtime_api
        function = Function([*command, *handler], env, tmp_path / f"function-{len(started)}.log")
        started.append(function)
        return function

    yield start
    for function in started:
        function.stop()


@pytest.fixture
def runtime_api():
    server = RuntimeApiServer()
    yield server
    server.close()


class Emulator:
    """cargo-lambda's Runtime API emulator, started and stopped by PID."""

    def __init__(self, folder: Path, log_path: Path):
        (folder / "src").mkdir(parents=True)
        (folder / "Cargo.toml").write_text('[package]\nname = "emu"\nversion = "0.0.0"\nedition = "2021"\n')
        (folder / "src" / "main.rs").write_text("fn main() {}\n")
        self.port = free_port()
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        cargo = shutil.which("cargo") or "cargo"
        env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        command = [cargo, "lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1", "-P", str(self.port)]
        self.process = subprocess.Popen(command, cwd=folder, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until(self._accepts, 30, "cargo-lambda emulator")
        self.runtime_api = f"http://127.0.0.1:{self.port}/.rt"

    def _accepts(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def invoke(self, payload, timeout: float = 60) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/2015-03-31/functions/_/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return answer.status, json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self.log.close()


@pytest.fixture
def emulator(tmp_path):
    emu = Emulator(tmp_path / "emu", tmp_path / "emulator.log")
    yield emu
    emu.stop()
