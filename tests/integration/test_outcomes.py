"""What is acknowledged, what is reported, and what is never uploaded."""

import json
import logging
import os
import shutil
import tempfile
from collections import namedtuple

import pytest

import bridge
from helpers import keys, one, put, read, receive, s3_event, sqs_event


def work_folders():
    return {n for n in os.listdir(tempfile.gettempdir()) if n.startswith(bridge.WORK_PREFIX)}


def test_a_failing_handler_reports_only_its_groups_messages_and_uploads_nothing(s3_to_sqs, s3, sqs, make_bridge):
    bucket, queue = s3_to_sqs
    put(s3, bucket, "good/input.txt")
    put(s3, bucket, "bad/input.txt")
    put(s3, bucket, "good/other.txt")
    messages = receive(sqs, queue, 3)
    by_key = {("bad" if "bad" in m["Body"] else "good"): m["MessageId"] for m in messages}
    handler = ["/bin/sh", "-c", 'touch "$ROOT_FOLDER/out.txt"; test "$KEY_PREFIX" != bad/']
    result = bridge.handle_invocation(make_bridge(handler), sqs_event(messages), None)
    assert result == {"batchItemFailures": [{"itemIdentifier": by_key["bad"]}]}
    assert "bad/out.txt" not in keys(s3, bucket)
    assert "good/out.txt" in keys(s3, bucket)


def test_a_message_feeding_a_failed_group_fails_even_if_its_other_group_succeeded(bucket, s3, make_bridge):
    put(s3, bucket, "ok/a")
    put(s3, bucket, "bad/a")
    messages = [
        bridge.Message("both", (bridge.ObjectRef(bucket, "ok/a"), bridge.ObjectRef(bucket, "bad/a"))),
        bridge.Message("only-ok", (bridge.ObjectRef(bucket, "ok/a"),)),
    ]
    failed = make_bridge(["/bin/sh", "-c", 'test "$KEY_PREFIX" = ok/']).process_messages(messages)
    assert failed == ["both"]


def test_an_unreadable_message_is_reported_and_its_neighbours_processed(bucket, s3, make_bridge):
    put(s3, bucket, "d/input.txt", "x")
    event = sqs_event(
        [
            {"MessageId": "garbage", "ReceiptHandle": "r", "Body": "{{{"},
            {"MessageId": "good", "ReceiptHandle": "r", "Body": json.dumps(s3_event(bucket, "d/input.txt"))},
        ]
    )
    handler = ["/bin/sh", "-c", 'echo done > "$ROOT_FOLDER/done"']
    assert bridge.handle_invocation(make_bridge(handler), event, None) == {
        "batchItemFailures": [{"itemIdentifier": "garbage"}]
    }
    assert read(s3, bucket, "d/done") == b"done\n"


def test_when_every_message_fails_the_invocation_fails(make_bridge):
    event = sqs_event(
        [{"MessageId": "a", "ReceiptHandle": "r", "Body": "x"}, {"MessageId": "b", "ReceiptHandle": "r", "Body": "y"}]
    )
    with pytest.raises(bridge.GroupError, match="every message failed: a, b"):
        bridge.handle_invocation(make_bridge(["true"]), event, None)


def test_a_direct_invocation_with_a_failed_group_is_an_invocation_error(bucket, s3, make_bridge):
    put(s3, bucket, "d/input.txt")
    event = s3_event(bucket, "d/input.txt")
    assert bridge.handle_invocation(make_bridge(["true"]), event, None) == {"status": "succeeded"}
    with pytest.raises(bridge.GroupError):
        bridge.handle_invocation(make_bridge(["false"]), event, None)


def test_a_handler_that_replaces_the_work_folder_with_a_link_uploads_nothing(bucket, s3, make_bridge, tmp_path):
    (tmp_path / "elsewhere.txt").write_text("x")
    put(s3, bucket, "r/input.txt")
    handler = ["/bin/sh", "-c", f'rm -rf "$ROOT_FOLDER" && ln -s {tmp_path} "$ROOT_FOLDER"']
    assert make_bridge(handler).process_messages(one(bucket, "r/input.txt")) == ["m"]
    assert keys(s3, bucket) == ["r/input.txt"]
    assert (tmp_path / "elsewhere.txt").exists()


def test_not_enough_free_space_fails_the_group_naming_both_numbers(bucket, s3, make_bridge, monkeypatch, caplog):
    put(s3, bucket, "big/input.txt", b"x" * 1000)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10_000, 9_900, 100))
    assert make_bridge(["true"]).process_messages(one(bucket, "big/input.txt")) == ["m"]
    assert "needs 1000 bytes" in caplog.text and "100 bytes free" in caplog.text


def test_the_work_folder_is_removed_whatever_happened(bucket, s3, make_bridge):
    put(s3, bucket, "w/input.txt")
    before = work_folders()
    for handler in (["true"], ["false"], ["/nonexistent"]):
        make_bridge(handler).process_messages(one(bucket, "w/input.txt"))
    assert work_folders() <= before


def test_the_summary_line_names_the_group_and_its_numbers(bucket, s3, make_bridge, caplog):
    caplog.set_level(logging.INFO, logger=bridge.log.name)
    put(s3, bucket, "sum/input.txt", b"12345")
    b = make_bridge(["/bin/sh", "-c", 'echo 123 > "$ROOT_FOLDER/out"'])
    b.process_messages(one(bucket, "sum/input.txt"))
    (record,) = [r for r in caplog.records if getattr(r, "fields", None)]
    assert record.fields["bucket"] == bucket and record.fields["prefix"] == "sum/"
    assert record.fields["pulled_files"] == 1 and record.fields["pulled_bytes"] == 5
    assert record.fields["uploaded_files"] == 1 and record.fields["uploaded_bytes"] == 4
    assert record.fields["exit_status"] == 0 and record.fields["outcome"] == "succeeded"


def test_outputs_are_uploaded_with_a_content_type_guessed_from_their_name(bucket, s3, make_bridge):
    put(s3, bucket, "ct/input.txt")
    handler = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && echo {} > a.json && echo x > b.html && echo x > c.unknownext']
    assert make_bridge(handler).process_messages(one(bucket, "ct/input.txt")) == []
    types = {key: s3.head_object(Bucket=bucket, Key=f"ct/{key}")["ContentType"] for key in ("a.json", "b.html")}
    assert types == {"a.json": "application/json", "b.html": "text/html"}
    assert s3.head_object(Bucket=bucket, Key="ct/c.unknownext")["ContentType"] in ("binary/octet-stream", "")
