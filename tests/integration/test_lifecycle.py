"""The edges of the process lifecycle: signals in every phase, strays, non-root outputs, deep trees, clashing keys."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from faulty_proxy import FaultyProxy

import bridge
from helpers import ROOT, keys, one, put, read, stopped_within, wait_until

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_run(env: dict, prefix: str, handler: str, log: Path, user: list[str] = ()) -> subprocess.Popen:
    command = [*user, sys.executable, str(ROOT / "bridge.py"), "run", "--prefix", prefix, "/bin/sh", "-c", handler]
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def proxy(moto_url):
    faulty = FaultyProxy(moto_url)
    yield faulty
    faulty.close()


@pytest.fixture
def private_tmp(tmp_path):
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


STALLS = {
    "listing": lambda method, path: method == "GET" and "list-type=2" in path,
    "pulling": lambda method, path: method == "GET" and path.endswith("/p/input.txt"),
    "running": None,
    "uploading": lambda method, path: method == "PUT" and path.endswith("/p/out.txt"),
}


@pytest.mark.parametrize("phase", list(STALLS))
def test_a_signal_in_any_phase_of_run_ends_it_and_its_handler_within_the_kill_grace(
    phase, proxy, aws_env, s3, bucket, tmp_path, private_tmp
):
    put(s3, bucket, "p/input.txt", "x")
    started = tmp_path / "started"
    work = "exec sleep 300" if phase == "running" else 'echo out > "$ROOT_FOLDER/out.txt"'
    proxy.stall = STALLS[phase]
    env = {**os.environ, "AWS_ENDPOINT_URL": proxy.url, "BUCKET": bucket, "TMPDIR": str(private_tmp)}
    process = start_run(env, "p/", f"echo $$ > {started}; {work}", tmp_path / "log")
    wait_until(started.exists if phase == "running" else lambda: proxy.stalled, 30, f"the {phase} phase")
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 1, (tmp_path / "log").read_text()
    assert time.monotonic() - began < stopped_within()
    assert started.exists() == (phase in ("running", "uploading")), "no handler starts once stopping"
    if phase == "running":
        assert not alive(int(started.read_text())), "the handler's process group was ended"
    assert keys(s3, bucket) == ["p/input.txt"]
    bridge.remove_stale_work_folders(str(private_tmp))
    assert os.listdir(private_tmp) == [], "whatever was left is swept by the next start"


def test_a_grandchild_that_left_the_process_group_is_ended_with_the_handler(aws_env, s3, bucket, tmp_path):
    put(s3, bucket, "s/input.txt")
    pidfile = tmp_path / "escaped"
    escape = f"setsid sh -c 'echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile}; exec sleep 300' &"
    handler = f'{escape} while [ ! -e {pidfile} ]; do :; done; touch "$ROOT_FOLDER/out"'
    process = start_run({**os.environ, "BUCKET": bucket}, "s/", handler, tmp_path / "log")
    assert process.wait(60) == 0, (tmp_path / "log").read_text()
    escaped = int(pidfile.read_text())
    wait_until(lambda: not alive(escaped), 30, "the escaped grandchild to be ended")
    assert "s/out" in keys(s3, bucket)


def test_as_a_non_root_user_outputs_in_folders_left_unreadable_are_uploaded(aws_env, s3, bucket, tmp_path):
    put(s3, bucket, "nr/input.txt")
    handler = (
        'cd "$ROOT_FOLDER" && mkdir -p out/deep && echo a > out/a.txt && echo b > out/deep/b.txt'
        " && chmod 000 out/deep/b.txt && chmod 0300 out/deep && chmod 0300 out"
        ' && cd / && chmod 000 "$ROOT_FOLDER" && chmod 000 "$(dirname "$ROOT_FOLDER")"'
    )
    env = {**os.environ, "BUCKET": bucket, "TMPDIR": "/tmp"}  # one that nobody can reach
    process = start_run(env, "nr/", handler, tmp_path / "log", user=NOBODY)
    assert process.wait(60) == 0, (tmp_path / "log").read_text()
    assert read(s3, bucket, "nr/out/a.txt") == b"a\n" and read(s3, bucket, "nr/out/deep/b.txt") == b"b\n"


DEEP = """
import os
os.chdir(os.environ["ROOT_FOLDER"])
open("out.txt", "w").write("ok")
for _ in range({depth}):
    os.mkdir("d")
    os.chdir("d")
os.chmod(".", 0)
"""


def work_folders() -> set[str]:
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(bridge.WORK_PREFIX)}


def test_a_handler_that_leaves_a_tree_deeper_than_the_recursion_limit_succeeds_and_it_is_removed(
    make_bridge, s3, bucket, caplog
):
    put(s3, bucket, "deep/input.txt")
    before = work_folders()
    handler = [sys.executable, "-c", DEEP.format(depth=1500)]
    assert make_bridge(handler).process_messages(one(bucket, "deep/input.txt")) == []
    assert read(s3, bucket, "deep/out.txt") == b"ok"
    assert work_folders() <= before
    assert "unexpected error" not in caplog.text


def test_an_output_deeper_than_path_max_fails_the_group_loudly_and_the_folder_still_goes(
    make_bridge, s3, bucket, caplog
):
    put(s3, bucket, "deeper/input.txt")
    before = work_folders()
    handler = [sys.executable, "-c", DEEP.format(depth=2500).replace('os.chmod(".", 0)', 'open("lost.txt", "w")')]
    assert make_bridge(handler).process_messages(one(bucket, "deeper/input.txt")) == ["m"]
    assert "lost.txt" in caplog.text and "failed" in caplog.text
    assert work_folders() <= before


def test_keys_that_cannot_all_be_placed_are_refused_one_by_one_and_the_first_listed_wins(
    make_bridge, s3, bucket, caplog
):
    long_segment = "x" * 300
    for key, body in [("k/a", "file"), ("k/a/", ""), ("k/a/b", "under"), (f"k/{long_segment}", "long"), ("k/ok", "ok")]:
        put(s3, bucket, key, body)
    handler = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && cat a ok > both']
    assert make_bridge(handler).process_messages(one(bucket, "k/ok")) == []
    assert read(s3, bucket, "k/both") == b"fileok"
    for refused in ("k/a/", "k/a/b", f"k/{long_segment}"):
        assert f"not pulling s3://{bucket}/{refused}: it cannot be placed" in caplog.text


def test_a_handler_that_exits_0_when_ended_by_a_signal_still_fails_its_group(aws_env, s3, bucket, tmp_path):
    put(s3, bucket, "t/input.txt")
    started = tmp_path / "started"
    handler = f"trap 'echo partial > \"$ROOT_FOLDER/out.txt\"; exit 0' TERM; touch {started}; sleep 30 & wait"
    process = start_run({**os.environ, "BUCKET": bucket}, "t/", handler, tmp_path / "log")
    wait_until(started.exists, 30, "the handler to start")
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 1
    assert "handler ended by shutdown" in (tmp_path / "log").read_text()
    assert keys(s3, bucket) == ["t/input.txt"], "a handler cut short uploads nothing, whatever its exit status"


def test_a_handler_that_moves_its_work_folder_away_uploads_nothing_and_both_places_are_removed(
    make_bridge, s3, bucket, tmp_path, caplog
):
    put(s3, bucket, "mv/input.txt")
    outside = tmp_path / "outside"
    (outside / "root").mkdir(parents=True)
    (outside / "root" / "secret.txt").write_text("not yours")
    os.chmod(outside / "root" / "secret.txt", 0)
    moved = tmp_path / "moved-to"
    handler = [
        "/bin/sh",
        "-c",
        f'W=$(dirname "$ROOT_FOLDER"); echo "$W" > {tmp_path}/was; mv "$W" {moved}; ln -s {outside} "$W"',
    ]
    assert make_bridge(handler).process_messages(one(bucket, "mv/input.txt")) == ["m"]
    assert "moved, removed or replaced its work folder" in caplog.text
    assert keys(s3, bucket) == ["mv/input.txt"]
    assert not moved.exists() and not os.path.lexists((tmp_path / "was").read_text().strip())
    assert (outside / "root" / "secret.txt").stat().st_mode & 0o777 == 0, "nothing outside was opened up"


def test_a_mount_left_in_the_work_folder_is_never_crossed(make_bridge, s3, bucket, tmp_path, caplog):
    put(s3, bucket, "mnt/input.txt")
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep.txt").write_text("keep")
    handler = ["/bin/sh", "-c", f'mkdir "$ROOT_FOLDER/m" && mount --bind {precious} "$ROOT_FOLDER/m"']
    probe = tmp_path / "probe"
    probe.mkdir()
    if subprocess.run(["mount", "--bind", str(precious), str(probe)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    subprocess.run(["umount", str(probe)], check=True)
    try:
        assert make_bridge(handler).process_messages(one(bucket, "mnt/input.txt")) == ["m"]
    finally:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            if bridge.WORK_PREFIX in line.split()[1]:
                subprocess.run(["umount", line.split()[1]], check=True)
    assert "a mount point: not crossed" in caplog.text
    assert (precious / "keep.txt").read_text() == "keep"
