"""Helpers shared by the test layers: the bridge as a program, free ports, polling, S3/SQS shorthands."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BRIDGE = [sys.executable, str(ROOT / "bridge.py")]
UPPERCASE = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && tr a-z A-Z < input.txt > output.txt']


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check, timeout: float = 30.0, what: str = "condition"):
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


def receive(sqs, queue_url: str, count: int, skip_test_event: bool = True, timeout: float = 60) -> list[dict]:
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


def s3_event(bucket: str, *keys_: str) -> dict:
    """An S3 notification of created objects, as S3 sends it to Lambda or (as JSON) to a queue."""
    records = [
        {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket}, "object": {"key": k}}} for k in keys_
    ]
    return {"Records": records}


def notifying_queue(s3, sqs, bucket: str, dead_letter_after: int | None = None) -> tuple[str, str | None]:
    """A fresh queue (and dead-letter queue) that the bucket's created-object notifications go to."""
    attributes, dlq_url = {}, None
    if dead_letter_after:
        dlq_url = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
        target = {"deadLetterTargetArn": queue_arn(sqs, dlq_url), "maxReceiveCount": str(dead_letter_after)}
        attributes["RedrivePolicy"] = json.dumps(target)
    url = sqs.create_queue(QueueName=unique("q"), Attributes=attributes)["QueueUrl"]
    config = {"QueueConfigurations": [{"QueueArn": queue_arn(sqs, url), "Events": ["s3:ObjectCreated:*"]}]}
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=config)
    return url, dlq_url


def queue_arn(sqs, url: str) -> str:
    return sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


def one(bucket: str, key: str) -> list:
    """A batch of one message, "m", that names one created object."""
    import bridge  # tests/conftest.py has put the repository on sys.path

    return [bridge.Message("m", (bridge.ObjectRef(bucket, key),))]


def pyenv_root() -> Path:
    try:
        return Path(subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return Path.home() / ".pyenv"


def interpreter(minor: int) -> str | None:
    """This machine's newest CPython 3.minor, if it has one."""
    found = sorted((pyenv_root() / "versions").glob(f"3.{minor}.*/bin/python3"))
    found = [str(p) for p in found if re.fullmatch(rf"3\.{minor}\.\d+", p.parent.parent.name)]
    return found[-1] if found else shutil.which(f"python3.{minor}")


#: Lambda's application log levels, least to most severe.
LAMBDA_ORDER = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]


def lambda_keeps(line: str, application_log_level: str) -> bool:
    """Lambda's documented filter for JSON-format functions: a line's `level` decides; a line that is not
    JSON, whose level is missing or not one of Lambda's names, or whose timestamp is missing or not RFC 3339,
    counts as INFO."""
    try:
        entry = json.loads(line)
        level, stamp = entry.get("level"), entry.get("timestamp")
    except (ValueError, AttributeError):
        level = stamp = None
    rfc3339 = isinstance(stamp, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", stamp)
    known = isinstance(level, str) and level.upper() in LAMBDA_ORDER and rfc3339
    return LAMBDA_ORDER.index(level.upper() if known else "INFO") >= LAMBDA_ORDER.index(application_log_level)


def stopped_within(grace: float = 0.0) -> float:
    """The seconds a stopping bridge may take, from its own constants: its kernel alarm ends it at
    int(grace + KILL_GRACE_SECONDS + EXIT_MARGIN_SECONDS) + 2 whatever runs; plus room for a busy
    machine to deliver the signal and tear the process down."""
    import bridge

    return int(grace + bridge.KILL_GRACE_SECONDS + bridge.EXIT_MARGIN_SECONDS) + 2 + 5
