"""Helpers shared by the test layers: free ports, polling, S3/SQS shorthands."""

from __future__ import annotations

import socket
import time
import urllib.request
import uuid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float = 15.0, what: str = "condition"):
    """Poll `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except Exception:  # a server that is not up yet refuses; keep polling
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as answer:
        return answer.status == 200


AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "test",
    "AWS_SECRET_ACCESS_KEY": "test-secret-never-logged",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def put(s3, bucket: str, key: str, body: bytes | str = b"x") -> None:
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)


def read(s3, bucket: str, key: str) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def sqs_event(messages: list[dict]) -> dict:
    """A Lambda SQS event built from messages received from a real queue."""
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {},
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:queue",
                "awsRegion": "us-east-1",
            }
            for m in messages
        ]
    }


def receive(sqs, queue_url: str, count: int, skip_test_event: bool = True, timeout: float = 20) -> list[dict]:
    """Receive exactly `count` messages (polling with a deadline), deleting none."""
    got: list[dict] = []

    def more():
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in answer.get("Messages", []):
            if skip_test_event and "s3:TestEvent" in m["Body"]:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            else:
                got.append(m)
        return len(got) >= count

    wait_until(more, timeout, f"{count} messages on {queue_url}")
    assert len(got) == count, [m["Body"] for m in got]
    return got
