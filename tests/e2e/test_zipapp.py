"""dist/bootstrap as users run it: every interpreter, racing starts, a broken cache, the Dockerfile."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import ROOT, UPPERCASE, interpreter, put, read, s3_event
from runtime_api import RuntimeApiServer

ZIPAPP = ROOT / "dist" / "bootstrap"


def build_id() -> str:
    with zipfile.ZipFile(ZIPAPP) as z:
        return re.search(r'Bundle\(ARCHIVE, "([0-9a-f]{16})"', z.read("__main__.py").decode()).group(1)


def lambda_env(aws_env, api=None, **settings):
    """Only what Lambda sets (the Runtime API address once there is a server), plus moto's endpoint."""
    env = {"PATH": "/usr/bin:/bin", "AWS_LAMBDA_FUNCTION_NAME": "f", **aws_env, **settings}
    if api is not None:
        env["AWS_LAMBDA_RUNTIME_API"] = api.address
    return env


@pytest.fixture
def copy(zipapp, tmp_path):
    """A fresh copy of the zipapp outside the source tree."""
    target = tmp_path / "bin" / "bootstrap"
    target.parent.mkdir()
    shutil.copy2(zipapp[0], target)
    return target


def start(command, env, log):
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop(process):
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def invoke_once(command, env, log_path, event, api=None):
    """Start a function, hand it one invocation, stop it; the result, or the log on failure."""
    api = api or RuntimeApiServer()
    with open(log_path, "wb") as log:
        process = start(command, {**env, "AWS_LAMBDA_RUNTIME_API": api.address}, log)
        try:
            result = api.invoke("r1", event, timeout=90)
        finally:
            stop(process)
            api.close()
    assert result[:2] == ("r1", "response"), Path(log_path).read_text()
    return result


def archive_without(archive, prefix: str, target):
    """A copy of the zipapp lacking the members under prefix, as a build without them would be.

    Without an interpreter's bytecode tree, __main__.py no longer lists it as compiled.
    """
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            data = source.read(info)
            if info.filename == "__main__.py" and prefix.startswith("pyc/"):
                data = data.replace(f"'{prefix.split('/')[1]}'".encode(), b"'none'")
            if not info.filename.startswith(prefix):
                copy.writestr(info, data)
    return target


@pytest.mark.parametrize("minor", [9, 10, 11, 12, 13, 14])
def test_a_filtered_invocation_succeeds_under_every_interpreter(minor, copy, aws_env, s3, bucket, tmp_path):
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"CPython 3.{minor} is not installed on this machine")
    put(s3, bucket, "job/input.txt", "abc")
    env = lambda_env(aws_env, None, S3_EVENT_BRIDGE_CACHE=str(tmp_path / "cache"), EXECUTION_FILTER_EXPR="length == 1")
    invoke_once([python, "-I", "-S", str(copy), *UPPERCASE], env, tmp_path / "log", s3_event(bucket, "job/input.txt"))
    assert read(s3, bucket, "job/output.txt") == b"ABC"
    jq_folders = [p.name for p in (tmp_path / "cache" / build_id()).iterdir() if p.name.startswith("jq-")]
    assert jq_folders == [f"jq-cp3{minor}-manylinux_2_26-{os.uname().machine}"]


#: Under each interpreter: the bridge's reading of every row of the regex table, where it differs.
REGEX_ROWS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import bridge
wrong = []
for row in json.load(open(sys.argv[2], encoding="utf-8")):
    try:
        got = bool(bridge.compile_regex(row["pattern"], "MATCH_KEY").search(row["key"]))
    except bridge.ConfigError:
        got = "refused"
    if got != row["bridge"]:
        wrong.append([row["pattern"], row["key"], row["bridge"], got])
print(json.dumps(wrong))
"""


@pytest.mark.parametrize("minor", [9, 10, 11, 12, 13, 14])
def test_every_interpreter_reads_the_regex_table_as_the_crate_does(minor):
    """Case folding depends on each CPython's Unicode version (13.0 in 3.9 to 15.1 in 3.13; the crate has 16):
    the table's rows, the crate's own answers, hold under each."""
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"CPython 3.{minor} is not installed on this machine")
    table = ROOT / "tests" / "data" / "regexes.json"
    answer = subprocess.run([python, "-I", "-c", REGEX_ROWS, str(ROOT), str(table)], capture_output=True, text=True)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout) == []


@pytest.mark.parametrize("minor", [9, 10, 11, 12, 13, 14])
def test_every_interpreter_gives_the_fast_path_tls_1_2_or_later_whatever_its_default(minor):
    """CPython 3.9's client contexts accept TLS 1.0; botocore's urllib3 asks for 1.2, and so must the fast path."""
    python = interpreter(minor)
    if python is None:
        pytest.skip(f"CPython 3.{minor} is not installed on this machine")
    code = "import sys; sys.path.insert(0, sys.argv[1]); import bridge; "
    code += "print(bridge.tls_context(None).minimum_version.name)"
    answer = subprocess.run([python, "-I", "-c", code, str(ROOT)], capture_output=True, text=True)
    assert (answer.returncode, answer.stdout.strip()) == (0, "TLSv1_2"), answer.stderr


def test_a_filter_on_an_interpreter_without_a_jq_build_is_an_init_error_listing_the_builds(copy, aws_env, tmp_path):
    this = f"jq/cp{sys.version_info[0]}{sys.version_info[1]}-"
    without = archive_without(copy, this, tmp_path / "without-jq")
    api = RuntimeApiServer()
    env = lambda_env(aws_env, api, S3_EVENT_BRIDGE_CACHE=str(tmp_path / "cache"), EXECUTION_FILTER_EXPR="true")
    with open(tmp_path / "log", "wb") as log:
        process = start([sys.executable, "-I", "-S", str(without), "true"], env, log)
        assert process.wait(60) != 0
    api.close()
    (error,) = api.init_errors
    message = error["body"]["errorMessage"]
    assert message.startswith("EXECUTION_FILTER_EXPR") and "no jq build for CPython" in message
    assert "cp39-musllinux_1_2-aarch64" in message and this[3:] not in message


def test_an_interpreter_without_a_bytecode_tree_unpacks_and_runs_the_sources(copy, aws_env, s3, bucket, tmp_path):
    without = archive_without(copy, f"pyc/cp{sys.version_info[0]}{sys.version_info[1]}/", tmp_path / "without-pyc")
    put(s3, bucket, "src/input.txt", "abc")
    cache = tmp_path / "cache"
    env = lambda_env(aws_env, None, S3_EVENT_BRIDGE_CACHE=str(cache))
    invoke_once(
        [sys.executable, "-I", "-S", str(without), *UPPERCASE], env, tmp_path / "log", s3_event(bucket, "src/input.txt")
    )
    assert read(s3, bucket, "src/output.txt") == b"ABC"
    assert (cache / build_id() / "lib" / "botocore" / "client.py").exists()


def test_the_archive_holds_jq_for_every_interpreter_and_platform():
    with zipfile.ZipFile(ZIPAPP) as z:
        names = set(z.namelist())
    for minor in range(9, 15):
        for libc in ("manylinux_2_26", "musllinux_1_2"):
            for arch in ("x86_64", "aarch64"):
                # Before 3.11, musl interpreters also named extensions *-linux-gnu.so.
                pattern = rf"jq/cp3{minor}-{libc}-{arch}/jq\.cpython-3{minor}-{arch}-linux-(gnu|musl)\.so"
                assert len([n for n in names if re.fullmatch(pattern, n)]) == 1, pattern
    assert not [n for n in names if n.startswith("files/data/ec2/")], "botocore data is pruned"
    assert "files/data/s3/2006-03-01/service-2.json.gz" in names
    assert "files/data/endpoints.json" in names and "files/cacert.pem" in names
    for minor in range(9, 15):
        assert (f"pyc/cp3{minor}/botocore/client.pyc" in names) == (interpreter(minor) is not None), minor


def test_the_file_starts_with_the_env_shebang_and_is_executable():
    assert ZIPAPP.read_bytes().startswith(b"#!/usr/bin/env python3\n")
    assert os.access(ZIPAPP, os.X_OK)


def test_four_processes_starting_at_once_share_one_unpacked_copy(copy, aws_env, tmp_path):
    cache = tmp_path / "cache"
    apis = [RuntimeApiServer() for _ in range(4)]
    logs = [open(tmp_path / f"log{i}", "wb") for i in range(4)]  # noqa: SIM115 - closed below
    env = {"S3_EVENT_BRIDGE_CACHE": str(cache), "EXECUTION_FILTER_EXPR": "true"}
    processes = [
        start([sys.executable, "-I", "-S", str(copy), "true"], lambda_env(aws_env, api, **env), log)
        for api, log in zip(apis, logs)
    ]
    try:
        test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}
        results = [api.invoke(f"r{i}", test_event, timeout=90) for i, api in enumerate(apis)]
    finally:
        for process in processes:
            stop(process)
        for api, log in zip(apis, logs):
            api.close()
            log.close()
    assert [r[1] for r in results] == ["response"] * 4, [(tmp_path / f"log{i}").read_text() for i in range(4)]
    home = cache / build_id()
    jq_folder = f"jq-cp{sys.version_info[0]}{sys.version_info[1]}-manylinux_2_26-{os.uname().machine}"
    assert sorted(p.name for p in home.iterdir()) == sorted([".files.lock", "files", f".{jq_folder}.lock", jq_folder])


def test_a_corrupted_cache_is_ignored_and_rebuilt(copy, aws_env, s3, bucket, tmp_path):
    put(s3, bucket, "c/input.txt", "abc")
    cache = tmp_path / "cache"
    files = cache / build_id() / "files"
    (files / "data").mkdir(parents=True)
    (files / "data" / "endpoints.json").write_text("corrupted")
    (cache / build_id() / ".files.unpacking-killed").mkdir()
    env = lambda_env(aws_env, None, S3_EVENT_BRIDGE_CACHE=str(cache))
    invoke_once(
        [sys.executable, "-I", "-S", str(copy), *UPPERCASE], env, tmp_path / "log", s3_event(bucket, "c/input.txt")
    )
    assert read(s3, bucket, "c/output.txt") == b"ABC"
    assert (files / ".complete").exists()
    assert "corrupted" not in (files / "data" / "endpoints.json").read_text()
    assert not (cache / build_id() / ".files.unpacking-killed").exists()


def test_a_targeted_build_fetches_one_jq_wheel_and_never_lands_on_the_universal_file(tmp_path):
    """The only index it can reach is the full wheel cache, so what it copies into its own empty cache is
    exactly what it fetched."""
    for name in ("bridge.py", "build_zipapp.sh", "requirements.lock"):
        shutil.copy2(ROOT / name, tmp_path / name)
    full = Path(os.environ.get("BRIDGE_WHEELS") or Path.home() / ".cache" / "s3-event-bridge" / "wheels")
    own = tmp_path / "wheels"
    own.mkdir()
    for wheel in full.glob("*.whl"):
        if not wheel.name.startswith("jq-"):
            shutil.copy2(wheel, own / wheel.name)
    env = {**os.environ, "BRIDGE_WHEELS": str(own), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(full)}
    target = ["--python", "3.12", "--platform", "manylinux_2_28_x86_64"]
    subprocess.run(["bash", "build_zipapp.sh", *target], cwd=tmp_path, env=env, check=True, capture_output=True)
    (fetched,) = [w.name for w in own.glob("jq-*")]
    assert fetched.startswith("jq-1.13.0-cp312-cp312-manylinux_2_26_x86_64"), fetched
    assert sorted(p.name for p in (tmp_path / "dist").iterdir()) == ["bootstrap-py3.12-manylinux_2_28_x86_64"]
    refusing = tmp_path / "no-pip" / "pip"
    refusing.mkdir(parents=True)
    (refusing / "__main__.py").write_text("raise SystemExit('pip was run')\n")
    again = {**env, "PYTHONPATH": str(refusing.parent)}  # a cache that has what the target needs: no pip at all
    subprocess.run(["bash", "build_zipapp.sh", *target], cwd=tmp_path, env=again, check=True, capture_output=True)


def test_two_builds_from_the_same_inputs_are_byte_identical_and_say_what_went_in(tmp_path):
    second = tmp_path / "bootstrap"
    built = subprocess.run(
        ["bash", str(ROOT / "build_zipapp.sh"), str(second)], check=True, capture_output=True, text=True, timeout=300
    )
    assert hashlib.sha256(second.read_bytes()).hexdigest() == hashlib.sha256(ZIPAPP.read_bytes()).hexdigest()
    trees = [f"cp3{minor}" for minor in range(9, 20) if interpreter(minor)]
    assert f"bytecode: {', '.join(trees)}\n" in built.stdout and "jq builds: 24\n" in built.stdout


def another_build(archive: Path, target: Path) -> Path:
    """A copy of the zipapp that says it is another build, as a newer bootstrap would."""
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(target, "w") as copy:
        for info in source.infolist():
            data = source.read(info)
            copy.writestr(
                info, data.replace(build_id().encode(), b"0" * 16) if info.filename == "__main__.py" else data
            )
    return target


@pytest.fixture
def read_only(tmp_path):
    """Make a folder read-only with a bind mount, where this machine allows mounting."""
    mounted = []

    def seal(folder: Path) -> Path:
        for options in (["--bind"], ["-o", "remount,bind,ro"]):
            result = subprocess.run(["mount", *options, str(folder), str(folder)], capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()}")
            mounted.append(folder)
        return folder

    yield seal
    for folder in mounted[:1]:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("prepared_by", ["another build", "another interpreter"])
def test_a_read_only_cache_that_does_not_fit_gives_way_to_a_private_folder(
    prepared_by, copy, aws_env, s3, bucket, tmp_path, read_only
):
    cache = tmp_path / "prepared"
    if prepared_by == "another build":
        preparing = [sys.executable, "-I", "-S", str(another_build(copy, tmp_path / "other-bootstrap"))]
    else:  # the same build, but its jq build for another interpreter: this one's must be unpacked elsewhere
        other = interpreter(sys.version_info[1] - 1) or interpreter(sys.version_info[1] + 1)
        if other is None:
            pytest.skip("no second CPython on this machine")
        preparing = [other, "-I", "-S", str(copy)]
    subprocess.run([*preparing, "--prepare", str(cache)], check=True, capture_output=True)
    read_only(cache)
    put(s3, bucket, "ro/input.txt", "abc")
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = lambda_env(
        aws_env, None, S3_EVENT_BRIDGE_CACHE=str(cache), TMPDIR=str(private_tmp), EXECUTION_FILTER_EXPR="length == 1"
    )
    event = s3_event(bucket, "ro/input.txt")
    invoke_once([sys.executable, "-I", "-S", str(copy), *UPPERCASE], env, tmp_path / "log", event)
    assert read(s3, bucket, "ro/output.txt") == b"ABC"
    log = (tmp_path / "log").read_text()
    assert "S3_EVENT_BRIDGE_CACHE: cannot use" in log and "Read-only file system" in log
    private = private_tmp / f"s3eb-cache-{os.geteuid()}" / build_id()
    jq_folder = f"jq-cp3{sys.version_info[1]}-manylinux_2_26-{os.uname().machine}"
    assert (private / jq_folder / ".complete").exists()
    assert (private / "files" / ".complete").exists() == (prepared_by == "another build")
