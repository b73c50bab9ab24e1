"""`bootstrap backfill`: what is already in the bucket, sent to a real queue as S3 would have notified it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from faulty_proxy import FaultyProxy

import bridge
from helpers import ROOT, keys, put, unique, wait_until


def drain(sqs, url: str) -> list[dict]:
    """Every message on the queue (received and deleted), polling until a receive comes back empty."""
    got: list[dict] = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return got
        got.extend(messages)
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def backfill(env: dict, *args: str, **settings) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "bridge.py"), "backfill", *args]
    return subprocess.run(command, env={**env, **settings}, capture_output=True, text=True, timeout=120)


@pytest.fixture
def queue(sqs):
    return sqs.create_queue(QueueName=unique("backfill"))["QueueUrl"]


@pytest.fixture
def filled(s3, bucket):
    """Three folders of three inputs, a file the function would not act on, and a nested folder."""
    for folder in ("a/", "b/", "c/x/"):
        for n in range(3):
            put(s3, bucket, f"{folder}in {n}+é.csv", "x")
    put(s3, bucket, "a/readme.txt", "not an input")
    return bucket


@pytest.mark.parametrize("parents, groups", [("0", ["a/", "b/", "c/x/"]), ("1", ["", "c/"])])
def test_backfill_sends_one_notification_per_group_of_matching_keys(parents, groups, aws_env, sqs, filled, queue):
    env = {"PATH": os.environ["PATH"], **aws_env, "SQS_QUEUE_URL": queue}
    result = backfill(env, "--bucket", filled, MATCH_KEY=r"\.csv$", PULL_PARENT_DIRS=parents)
    assert result.returncode == 0, result.stderr
    assert f"listed 10 objects, 9 matching MATCH_KEY; sent {len(groups)} messages" in result.stdout
    messages = drain(sqs, queue)
    refs = [ref for m in messages for ref in bridge.parse_body(m["Body"])]
    assert sorted(bridge.key_prefix(ref.key, int(parents)) for ref in refs) == groups, "each group once"
    assert all(ref.bucket == filled and ref.key.endswith("+é.csv") for ref in refs), "keys survive the encoding"


def test_backfill_takes_a_prefix_and_needs_a_queue(aws_env, sqs, filled, queue):
    env = {"PATH": os.environ["PATH"], **aws_env}
    refused = backfill(env, "--bucket", filled)
    assert refused.returncode == 2 and "SQS_QUEUE_URL" in refused.stderr
    result = backfill(env, "--bucket", filled, "--prefix", "b/", SQS_QUEUE_URL=queue)
    assert result.returncode == 0, result.stderr
    assert [bridge.parse_body(m["Body"])[0].key.startswith("b/") for m in drain(sqs, queue)] == [True]


def test_backfill_refuses_a_bucket_outside_source_buckets_and_sends_nothing(aws_env, sqs, filled, queue):
    env = {"PATH": os.environ["PATH"], **aws_env, "SQS_QUEUE_URL": queue, "SOURCE_BUCKETS": "only-this-one"}
    refused = backfill(env, "--bucket", filled)
    assert refused.returncode == 2 and "SOURCE_BUCKETS" in refused.stderr
    assert drain(sqs, queue) == []


@pytest.mark.parametrize("refusals, status", [(1, 0), (99, 1)])
def test_refused_entries_are_sent_again_then_reported_and_none_is_sent_twice(
    refusals, status, moto_url, aws_env, sqs, filled, queue
):
    proxy = FaultyProxy(moto_url)
    refused = []

    def refuse_the_first_entry(target, request):
        if target.endswith("SendMessageBatch") and len(refused) < refusals:
            refused.append(request["Entries"][0]["MessageBody"])
            request["Entries"][0]["DelaySeconds"] = 1000  # beyond SQS's 900: that entry alone fails
        return request

    proxy.rewrite_sqs = refuse_the_first_entry
    try:
        env = {"PATH": os.environ["PATH"], **aws_env, "AWS_ENDPOINT_URL": proxy.url, "SQS_QUEUE_URL": queue}
        result = backfill(env, "--bucket", filled, MATCH_KEY=r"\.csv$")
    finally:
        proxy.close()
    assert result.returncode == status, result.stderr
    bodies = [m["Body"] for m in drain(sqs, queue)]
    assert len(bodies) == len(set(bodies)), "no object sent twice"
    if status == 0:
        assert len(bodies) == 3 and refused[0] in bodies
    else:
        assert len(bodies) == 2 and "not sent: the message for a/in 0+é.csv" in result.stderr
        assert "1 not sent" in result.stdout


def test_a_send_whose_answer_was_lost_is_never_repeated_and_is_reported_unknown(moto_url, aws_env, sqs, filled, queue):
    """botocore would resend a batch whose answer it never got: every message would arrive twice."""
    proxy = FaultyProxy(moto_url)
    losses = []

    def lose(method, path, target):
        losses.extend([target] if target.endswith("SendMessageBatch") else [])
        return target.endswith("SendMessageBatch")

    proxy.lose = lose
    try:
        env = {"PATH": os.environ["PATH"], **aws_env, "AWS_ENDPOINT_URL": proxy.url, "SQS_QUEUE_URL": queue}
        result = backfill(env, "--bucket", filled, MATCH_KEY=r"\.csv$", GROUP_BY="object")
    finally:
        proxy.close()
    assert result.returncode == 1, result.stderr
    bodies = [m["Body"] for m in drain(sqs, queue)]
    assert len(bodies) == 9 and len(set(bodies)) == 9, "each object's message arrived once, never twice"
    assert len(losses) == 1, "the batch was sent once"
    assert (
        "sent 0 messages (one per object), 0 not sent, 9 unknown (they may have arrived; not sent again)"
        in result.stdout
    )


def test_a_backfill_drained_by_a_consume_worker_runs_every_group(aws_env, s3, sqs, filled, queue, tmp_path):
    env = {"PATH": os.environ["PATH"], **aws_env, "SQS_QUEUE_URL": queue, "MATCH_KEY": r"\.csv$"}
    assert backfill(env, "--bucket", filled).returncode == 0
    handler = ["/bin/sh", "-c", 'ls "$ROOT_FOLDER" | grep -c csv > "$ROOT_FOLDER/count.out"']
    command = [sys.executable, str(ROOT / "bridge.py"), "consume", *handler]
    with open(tmp_path / "log", "wb") as log:
        worker = subprocess.Popen(command, env={**env, "SQS_WAIT_TIME_SECONDS": "1"}, stdout=log, stderr=log)
    try:
        wanted = {"a/count.out", "b/count.out", "c/x/count.out"}
        wait_until(lambda: wanted <= set(keys(s3, filled)), 60, "every group's output")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0
    assert s3.get_object(Bucket=filled, Key="a/count.out")["Body"].read() == b"3\n"
    assert drain(sqs, queue) == [], "every message acknowledged"
