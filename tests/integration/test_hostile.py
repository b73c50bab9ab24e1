"""Hostile keys and hostile handlers: nothing outside the work folder is read or written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import bridge
from helpers import ROOT, keys, one, put, read, s3_event

LIST_FILES = [
    "/bin/sh",
    "-c",
    'cd "$ROOT_FOLDER" && found=$(find . | sort | tr "\\n" " ") && printf %s "$found" > found',
]


def places(name: str) -> list[Path]:
    """Everywhere a key that escaped the work folder could have landed."""
    work_parent = Path(tempfile.gettempdir())
    return [Path("/") / name, work_parent / name, work_parent.parent / name, Path.cwd() / name]


@pytest.mark.parametrize("parents", ["0", "-1"])
def test_keys_that_climb_out_never_leave_the_work_folder(parents, make_bridge, s3, bucket):
    tag = uuid.uuid4().hex[:8]
    hostile = [
        f"p/../../escape-{tag}",
        f"../escape-{tag}",
        f"/escape-{tag}",
        f"p//escape-{tag}",
        f"%2e%2e/escape-{tag}",
    ]
    for key in hostile:
        put(s3, bucket, key, "attacker")
    encoded = [
        "p%2F..%2F..%2Fescape-" + tag,
        "%2e%2e%2Fescape-" + tag,
        "%2Fescape-" + tag,
        "%252e%252e%2Fescape-" + tag,
    ]
    b = make_bridge(LIST_FILES, PULL_PARENT_DIRS=parents)
    for key in encoded:
        bridge.handle_invocation(b, s3_event(bucket, key), None)
    for place in places(f"escape-{tag}"):
        assert not place.exists(), place
    found = [read(s3, bucket, k).decode() for k in keys(s3, bucket) if k.endswith("found")]
    assert found, "the handler ran"
    for listing in found:
        assert ".." not in listing.replace("%2e%2e", "")


def test_output_links_and_special_files_are_neither_read_nor_uploaded(make_bridge, s3, bucket, tmp_path, caplog):
    put(s3, bucket, "l/input.txt")
    links = f"ln -s /etc/passwd passwd && ln -s /etc etc && ln -s {tmp_path} outside"
    links += " && mkdir d && ln -s /etc/shadow d/shadow && mkfifo pipe"
    handler = ["/bin/sh", "-c", f'cd "$ROOT_FOLDER" && {links} && echo fine > real.txt']
    assert make_bridge(handler).process_messages(one(bucket, "l/input.txt")) == []
    assert keys(s3, bucket) == ["l/input.txt", "l/real.txt"]
    assert "not uploading pipe: it is not a regular file" in caplog.text
    assert "not uploading d/shadow: it is a symbolic link" in caplog.text


def test_credentials_and_object_contents_never_appear_in_the_logs(aws_env, s3, bucket):
    """At the most verbose level there is: botocore's own loggers (which print the access key id
    of every request at DEBUG) are never connected to the bridge's output."""
    put(s3, bucket, "c/input.txt", "object contents that must not be logged")
    secrets = {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLEKEYIDXYZ", "AWS_SECRET_ACCESS_KEY": "wJalrEXAMPLESECRETdoNotLogMe"}
    env = {"PATH": os.environ["PATH"], **aws_env, **secrets, "BUCKET": bucket, "AWS_LAMBDA_LOG_LEVEL": "TRACE"}
    outputs = []
    for log_format, handler in (("Text", "true"), ("JSON", "false")):
        result = subprocess.run(
            [sys.executable, str(ROOT / "bridge.py"), "run", "--prefix", "c/", handler],
            env={**env, "AWS_LAMBDA_LOG_FORMAT": log_format},
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs.append(result.stdout + result.stderr)
    assert "group s3://" in outputs[0] and json.loads(outputs[1].strip().splitlines()[-1])["outcome"] == "failed"
    for output in outputs:
        for secret in (*secrets.values(), "object contents"):
            assert secret not in output
