"""SOURCE_BUCKETS and EXPECTED_BUCKET_OWNER, in every way an event arrives: an event naming another
bucket runs nothing and is never acknowledged, and every S3 request carries the expected owner."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse

import pytest

import bridge
from helpers import BRIDGE, keys, put, read, s3_event, sqs_event, unique

MOTO_ACCOUNT = "123456789012"  # the account moto's buckets belong to


@pytest.fixture
def other(s3):
    name = unique("other")
    s3.create_bucket(Bucket=name)
    return name


def test_an_event_naming_a_bucket_outside_source_buckets_runs_nothing_in_any_lambda_payload(
    make_bridge, s3, bucket, other, tmp_path
):
    for name in (bucket, other):
        put(s3, name, "a/input.txt")
    ledger = tmp_path / "runs"
    handler = ["/bin/sh", "-c", f'echo "$BUCKET" >> {ledger}; touch "$ROOT_FOLDER/output.txt"']
    allowed = make_bridge(handler, SOURCE_BUCKETS=f" {bucket} , elsewhere")
    received = [{"MessageId": n, "ReceiptHandle": n, "Body": json.dumps(s3_event(b, "a/input.txt"))} for n, b in
                (("good", bucket), ("bad", other))]  # fmt: skip
    answer = bridge.handle_invocation(allowed, sqs_event(received), None)
    assert answer == {"batchItemFailures": [{"itemIdentifier": "bad"}]}
    with pytest.raises(bridge.GroupError):
        bridge.handle_invocation(allowed, s3_event(other, "a/input.txt"), None)
    tasks = [{"taskId": t, "s3Bucket": b, "s3Key": "a/input.txt"} for t, b in (("t-other", other), ("t-ok", bucket))]
    payload = {"invocationSchemaVersion": "2.0", "invocationId": "i", "job": {"id": "j"}, "tasks": tasks}
    results = {r["taskId"]: r for r in bridge.handle_invocation(allowed, payload, None)["results"]}
    assert results["t-other"]["resultCode"] == "PermanentFailure"
    assert "SOURCE_BUCKETS" in results["t-other"]["resultString"]
    assert results["t-ok"]["resultCode"] == "Succeeded"
    assert ledger.read_text().split() == [bucket, bucket], "the handler ran only for the allowed bucket"
    assert keys(s3, other) == ["a/input.txt"]


def test_run_refuses_a_bucket_outside_source_buckets(aws_env, s3, other, tmp_path):
    put(s3, other, "a/input.txt")
    env = {"PATH": os.environ["PATH"], **aws_env, "SOURCE_BUCKETS": "only-this-one"}
    command = [*BRIDGE, "run", "--bucket", other, "--prefix", "a/", "/bin/sh", "-c", f"touch {tmp_path}/ran"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "SOURCE_BUCKETS" in result.stderr
    assert not (tmp_path / "ran").exists()


def test_every_s3_request_carries_the_expected_bucket_owner(proxy, make_bridge, s3, bucket):
    """Listing, the fast path's GET and PUT, and s3transfer's ranged GETs and multipart upload alike."""
    big = os.urandom(bridge.MULTIPART_THRESHOLD + 1024)
    put(s3, bucket, "g/small.txt", "abc")
    put(s3, bucket, "g/big.bin", big)
    handler = [
        "/bin/sh",
        "-c",
        'cd "$ROOT_FOLDER" && tr a-z A-Z < small.txt > out.txt && cat big.bin big.bin > twice.bin',
    ]
    owned = make_bridge(handler, EXPECTED_BUCKET_OWNER=MOTO_ACCOUNT)
    store = bridge.S3Store(bridge.aws_session(None), 4, owner=MOTO_ACCOUNT)
    owned.store = store
    proxy.requests.clear()
    assert owned.process_messages([bridge.Message("m", (bridge.ObjectRef(bucket, "g/small.txt"),))]) == []
    assert read(s3, bucket, "g/out.txt") == b"ABC" and read(s3, bucket, "g/twice.bin") == big + big
    asked = set()
    for method, path, headers in proxy.requests:
        names = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query, keep_blank_values=True)
        asked.update((method, name) for name in [*names, *("Range" for h in headers if h.lower() == "range")] or [""])
    assert {("GET", "list-type"), ("GET", "Range"), ("GET", ""), ("POST", "uploads"), ("PUT", "partNumber")} <= asked
    assert any(h.get("User-Agent", "").endswith("fast-path") for _, _, h in proxy.requests)
    owners = [
        ({k.lower(): v for k, v in h.items()}.get("x-amz-expected-bucket-owner"), m, p) for m, p, h in proxy.requests
    ]
    missing = [(method, path) for owner, method, path in owners if owner != MOTO_ACCOUNT]
    assert missing == []
