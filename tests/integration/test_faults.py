"""Faults: S3 dying mid-transfer, throttling, handlers that misbehave, a full disk, SQS faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from faulty_proxy import FaultyProxy

import bridge
from helpers import ROOT, keys, one, put, read, s3_event, wait_until

MIB = 1024 * 1024


def work_folders():
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(bridge.WORK_PREFIX)}


# --- S3 faults -----------------------------------------------------------------

COPY = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && cp big.bin copy.bin']


def test_s3_dying_mid_download_fails_the_group_and_a_retry_after_recovery_succeeds(proxy, make_bridge, s3, bucket):
    data = os.urandom(4 * MIB)
    put(s3, bucket, "dl/big.bin", data)
    before = work_folders()
    proxy.cut_responses_after = MIB
    assert make_bridge(COPY).process_messages(one(bucket, "dl/big.bin")) == ["m"]
    assert keys(s3, bucket) == ["dl/big.bin"]
    assert work_folders() <= before
    assert any(method == "GET" and path.endswith("/dl/big.bin") for method, path, _ in proxy.served)
    proxy.heal()
    assert make_bridge(COPY).process_messages(one(bucket, "dl/big.bin")) == []
    assert read(s3, bucket, "dl/copy.bin") == data


def test_s3_dying_mid_upload_fails_the_group_and_a_retry_after_recovery_succeeds(proxy, make_bridge, s3, bucket):
    put(s3, bucket, "ul/input.txt", "go")
    write_big = ["/bin/sh", "-c", 'head -c 4194304 /dev/urandom > "$ROOT_FOLDER/big.out"']
    before = work_folders()
    proxy.cut_requests_after = MIB
    assert make_bridge(write_big).process_messages(one(bucket, "ul/input.txt")) == ["m"]
    assert keys(s3, bucket) == ["ul/input.txt"]
    assert any(status == -1 for _, _, status in proxy.served), "an upload was cut"
    assert work_folders() <= before
    proxy.heal()
    assert make_bridge(write_big).process_messages(one(bucket, "ul/input.txt")) == []
    assert s3.head_object(Bucket=bucket, Key="ul/big.out")["ContentLength"] == 4 * MIB


def test_throttling_answers_are_retried_by_botocore_standard_mode(proxy, make_bridge, s3, bucket):
    put(s3, bucket, "t/input.txt", "x")
    proxy.throttle = 2
    assert make_bridge(["/bin/sh", "-c", 'touch "$ROOT_FOLDER/out"']).process_messages(one(bucket, "t/input.txt")) == []
    assert [status for _, _, status in proxy.served].count(503) == 2
    assert "t/out" in keys(s3, bucket)


def test_s3_down_fails_the_group_without_losing_anything(proxy, make_bridge, s3, bucket):
    put(s3, bucket, "down/input.txt", "x")
    proxy.down = True
    before = work_folders()
    assert make_bridge(["true"]).process_messages(one(bucket, "down/input.txt")) == ["m"]
    assert work_folders() <= before


# --- handler faults ------------------------------------------------------------

HANDLER_FAULTS = {
    "python crash": (
        [sys.executable, "-c", "open(__import__('os').environ['ROOT_FOLDER'] + '/out', 'w'); 1 / 0"],
        "failed: handler exited with status 1",
    ),
    "non-zero exit": (["/bin/sh", "-c", 'touch "$ROOT_FOLDER/out"; exit 3'], "failed: handler exited with status 3"),
    "killed by a signal": (
        ["/bin/sh", "-c", 'touch "$ROOT_FOLDER/out"; kill -KILL $$'],
        "failed: handler was killed by signal 9",
    ),
    "past its timeout": (["/bin/sh", "-c", 'touch "$ROOT_FOLDER/out"; exec sleep 60'], "timed_out: handler timed out"),
}


@pytest.mark.parametrize("fault", sorted(HANDLER_FAULTS))
def test_a_faulty_handler_fails_its_group_logs_why_uploads_nothing_and_the_next_runs(
    fault, make_bridge, s3, bucket, caplog
):
    command, reason = HANDLER_FAULTS[fault]
    put(s3, bucket, "h/input.txt")
    faulty = make_bridge(command, HANDLER_TIMEOUT="1")
    assert faulty.process_messages(one(bucket, "h/input.txt")) == ["m"]
    assert keys(s3, bucket) == ["h/input.txt"]
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("group s3://")]
    assert line.startswith(f"group s3://{bucket}/h/ {reason}")
    good = make_bridge(["/bin/sh", "-c", 'touch "$ROOT_FOLDER/out"'])
    assert good.process_messages(one(bucket, "h/input.txt")) == []
    assert "h/out" in keys(s3, bucket)


@pytest.mark.parametrize("ends", ["exits 0", "times out"])
def test_a_grandchild_left_running_is_gone_when_the_group_ends(ends, make_bridge, s3, bucket, tmp_path):
    put(s3, bucket, "g/input.txt")
    pidfile = tmp_path / "grandchild"
    tail = "exit 0" if ends == "exits 0" else "exec sleep 60"
    spawn = ["/bin/sh", "-c", f"sh -c 'sleep 300 & echo $! > {pidfile}; wait' & sleep 0.5; {tail}"]
    make_bridge(spawn, HANDLER_TIMEOUT="2").process_messages(one(bucket, "g/input.txt"))
    grandchild = int(pidfile.read_text())
    wait_until(lambda: not _alive(grandchild), 30, "the grandchild to be gone")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


@pytest.fixture
def small_disk(monkeypatch):
    """A 16 MiB tmpfs as the temporary folder, where this machine allows mounting one."""
    folder = tempfile.mkdtemp(prefix="s3eb-small-disk-")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", folder], capture_output=True)
    if mounted.returncode != 0:
        os.rmdir(folder)
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the free-space check test covers pulls"
        )
    monkeypatch.setattr(tempfile, "tempdir", folder)
    yield folder
    subprocess.run(["umount", folder], check=True)
    os.rmdir(folder)


def test_a_handler_that_fills_the_disk_fails_uploads_nothing_and_the_space_comes_back(
    small_disk, make_bridge, s3, bucket, caplog
):
    put(s3, bucket, "full/input.txt")
    fill = ["/bin/sh", "-c", 'head -c 33554432 /dev/zero > "$ROOT_FOLDER/huge.bin"']
    assert make_bridge(fill).process_messages(one(bucket, "full/input.txt")) == ["m"]
    assert keys(s3, bucket) == ["full/input.txt"]
    assert "exited with status" in caplog.text
    assert os.listdir(small_disk) == []
    fits = ["/bin/sh", "-c", 'head -c 1048576 /dev/zero > "$ROOT_FOLDER/fits.bin"']
    assert make_bridge(fits).process_messages(one(bucket, "full/input.txt")) == []
    assert "full/fits.bin" in keys(s3, bucket)


def test_inputs_larger_than_the_free_space_are_refused_before_pulling(small_disk, make_bridge, s3, bucket, caplog):
    put(s3, bucket, "big/blob.bin", b"\0" * (20 * MIB))
    assert make_bridge(["true"]).process_messages(one(bucket, "big/blob.bin")) == ["m"]
    assert f"needs {20 * MIB} bytes" in caplog.text and "bytes free" in caplog.text


# --- SQS worker faults ---------------------------------------------------------


def consume(aws_env, endpoint, queue_url, handler, log_path, **settings):
    env = {"PATH": os.environ["PATH"], **aws_env, "AWS_ENDPOINT_URL": endpoint, "SQS_QUEUE_URL": queue_url}
    env.update(SQS_WAIT_TIME_SECONDS="1", **settings)
    log = open(log_path, "wb")  # noqa: SIM115 - the process owns it until it exits
    return subprocess.Popen(
        [sys.executable, str(ROOT / "bridge.py"), "consume", *handler], env=env, stdout=log, stderr=subprocess.STDOUT
    )


def stop(process):
    process.terminate()
    return process.wait(30)


def test_a_message_whose_delete_failed_is_processed_again_not_lost(proxy, aws_env, clients, bucket, tmp_path):
    sqs = clients["sqs"]
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    put(clients["s3"], bucket, "d/input.txt")
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(s3_event(bucket, "d/input.txt")))
    spoiled = []

    def spoil_first_delete(target, request):
        if target.endswith("DeleteMessageBatch") and not spoiled:
            spoiled.append(request["Entries"][0]["Id"])
            request["Entries"][0]["ReceiptHandle"] = "spoiled"
        return request

    proxy.rewrite_sqs = spoil_first_delete
    ledger = tmp_path / "runs"
    worker = consume(
        aws_env,
        proxy.url,
        url,
        ["/bin/sh", "-c", f"echo run >> {ledger}"],
        tmp_path / "log",
        SQS_VISIBILITY_TIMEOUT="1",
    )
    try:
        wait_until(
            lambda: ledger.exists() and len(ledger.read_text().split()) == 2, 30, "the message to be processed again"
        )
        attributes = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        wait_until(
            lambda: (
                set(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=attributes)["Attributes"].values()) == {"0"}
            ),
            20,
            "the queue to empty",
        )
    finally:
        assert stop(worker) == 0
    assert spoiled and "was not deleted" in (tmp_path / "log").read_text()


def test_a_worker_rides_out_an_unreachable_queue_and_recovers(proxy, aws_env, clients, bucket, tmp_path):
    sqs = clients["sqs"]
    url = sqs.create_queue(QueueName=f"q-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    proxy.down = True
    worker = consume(aws_env, proxy.url, url, ["/bin/sh", "-c", 'touch "$ROOT_FOLDER/out"'], tmp_path / "log")
    try:
        wait_until(lambda: (tmp_path / "log").read_text().count("retrying in") >= 2, 60, "two failed receives")
        proxy.heal()
        put(clients["s3"], bucket, "back/input.txt")
        sqs.send_message(QueueUrl=url, MessageBody=json.dumps(s3_event(bucket, "back/input.txt")))
        wait_until(lambda: "back/out" in keys(clients["s3"], bucket), 60, "processing once the queue is back")
    finally:
        assert stop(worker) == 0
    log = (tmp_path / "log").read_text()
    assert "retrying in 1s" in log and "retrying in 2s" in log, "the wait doubles"


def test_a_multipart_download_never_mixes_two_versions_and_asks_no_head(moto_url, aws_env, s3, bucket, tmp_path):
    """The listed size and ETag go to s3transfer: no HEAD request, and every ranged GET carries If-Match."""
    size = bridge.MULTIPART_THRESHOLD + 1024
    s3.put_object(Bucket=bucket, Key="big/blob", Body=b"v" * size)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="big/")["Contents"][0]
    proxy = FaultyProxy(moto_url)
    os.environ["AWS_ENDPOINT_URL"] = proxy.url
    try:
        store = bridge.S3Store(bridge.aws_session(None), 4)
        obj = {"Key": "big/blob", "Size": listed["Size"], "ETag": listed["ETag"]}
        store.download(bucket, [(obj, str(tmp_path / "blob"))])
    finally:
        os.environ["AWS_ENDPOINT_URL"] = aws_env["AWS_ENDPOINT_URL"]
        proxy.close()
    assert (tmp_path / "blob").stat().st_size == size
    methods = [method for method, _, _ in proxy.requests]
    assert "HEAD" not in methods and methods.count("GET") >= 2, methods
    assert all(headers.get("If-Match") == listed["ETag"] for method, _, headers in proxy.requests if method == "GET")
