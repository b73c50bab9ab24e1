"""Real bucket notifications from moto, received from SQS and handed to the bridge."""

import pytest

import bridge
from helpers import UPPERCASE, keys, one, put, read, receive, sqs_event


@pytest.mark.parametrize("wiring", ["s3_to_sqs", "s3_to_sns_to_sqs", "s3_to_eventbridge_to_sqs"])
def test_each_notification_route_runs_the_handler_and_uploads_its_output(request, s3, sqs, make_bridge, wiring):
    bucket, queue = request.getfixturevalue(wiring)
    put(s3, bucket, "job 1/input.txt", "hello")
    put(s3, bucket, "job+2/input.txt", "world")
    messages = receive(sqs, queue, 2)
    result = bridge.handle_invocation(make_bridge(UPPERCASE, MATCH_KEY=r"input\.txt$"), sqs_event(messages), None)
    assert result == {"batchItemFailures": []}
    assert read(s3, bucket, "job 1/output.txt") == b"HELLO"
    assert read(s3, bucket, "job+2/output.txt") == b"WORLD"


def test_the_test_event_sent_on_configuration_is_acknowledged_without_work(s3_to_sqs, sqs, make_bridge):
    _, queue = s3_to_sqs
    messages = receive(sqs, queue, 1, skip_test_event=False)
    assert "s3:TestEvent" in messages[0]["Body"]
    assert bridge.handle_invocation(make_bridge(["false"]), sqs_event(messages), None) == {"batchItemFailures": []}


def test_a_key_with_spaces_plus_and_accents_round_trips(s3_to_sqs, s3, sqs, make_bridge):
    bucket, queue = s3_to_sqs
    put(s3, bucket, "in put/a+b é.txt", "data")
    handler = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && cp "a+b é.txt" "a+b é.out" && echo "$KEY_PREFIX" > prefix']
    result = bridge.handle_invocation(
        make_bridge(handler, MATCH_KEY=r"\.txt$"), sqs_event(receive(sqs, queue, 1)), None
    )
    assert result == {"batchItemFailures": []}
    assert read(s3, bucket, "in put/a+b é.out") == b"data"
    assert read(s3, bucket, "in put/prefix") == b"in put/\n"


SEED_BARRIER = """
group_by(.Key | split("/") | .[:-1]) | all(
  any(.Key | split("/") | .[-1] == "input.txt") and
  any(.Key | split("/") | .[-1] == "output.txt")
)
"""


def test_the_seed_map_reduce_barrier_skips_until_every_folder_has_its_output(bucket, s3, make_bridge):
    for folder in ("run/a", "run/b"):
        put(s3, bucket, f"{folder}/input.txt", "1")
    reduce_ = make_bridge(
        ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && cat */output.txt > total.txt'],
        EXECUTION_FILTER_EXPR=SEED_BARRIER,
        PULL_PARENT_DIRS="1",
    )
    trigger = bridge.Message("m", (bridge.ObjectRef(bucket, "run/a/output.txt"),))
    put(s3, bucket, "run/a/output.txt", "A")
    assert reduce_.process_messages([trigger]) == []
    assert "run/total.txt" not in keys(s3, bucket)
    put(s3, bucket, "run/b/output.txt", "B")
    assert reduce_.process_messages([trigger]) == []
    assert read(s3, bucket, "run/total.txt") == b"AB"


def test_the_filter_sees_the_object_api_shape(bucket, s3, make_bridge):
    put(s3, bucket, "d/input.txt", "abc")
    shape = (
        '.[0] | (.Key == "d/input.txt") and (.Size == 3) and (.ETag | startswith("\\"")) '
        'and (.LastModified | test("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}([.][0-9]+)?Z$")) '
        'and (.StorageClass == "STANDARD")'
    )
    checker = make_bridge(
        ["/bin/sh", "-c", 'echo ok > "$ROOT_FOLDER/ran"'], EXECUTION_FILTER_EXPR=f"if {shape} then true else false end"
    )
    assert checker.process_messages(one(bucket, "d/input.txt")) == []
    assert read(s3, bucket, "d/ran") == b"ok\n"


def test_target_bucket_receives_the_outputs(bucket, s3, make_bridge):
    target = bucket + "-out"
    s3.create_bucket(Bucket=target)
    put(s3, bucket, "x/input.txt", "hi")
    b = make_bridge(UPPERCASE, TARGET_BUCKET=target)
    assert b.process_messages(one(bucket, "x/input.txt")) == []
    assert keys(s3, target) == ["x/output.txt"]
    assert keys(s3, bucket) == ["x/input.txt"]


def test_only_new_or_changed_files_are_uploaded(bucket, s3, make_bridge):
    put(s3, bucket, "p/same.txt", "same")
    put(s3, bucket, "p/changed.txt", "old")
    put(s3, bucket, "p/sub/", b"")
    handler = [
        "/bin/sh",
        "-c",
        'cd "$ROOT_FOLDER" && test -d sub && echo new > changed.txt && echo x > sub/new.txt && touch same.txt',
    ]
    b = make_bridge(handler)
    before = s3.head_object(Bucket=bucket, Key="p/same.txt")["LastModified"]
    assert b.process_messages(one(bucket, "p/same.txt")) == []
    assert read(s3, bucket, "p/changed.txt") == b"new\n"
    assert read(s3, bucket, "p/sub/new.txt") == b"x\n"
    assert s3.head_object(Bucket=bucket, Key="p/same.txt")["LastModified"] == before


def test_pull_match_keys_select_what_is_pulled_but_not_what_the_filter_sees(bucket, s3, make_bridge):
    for key in ("p/a.txt", "p/b.csv", "p/c.txt"):
        put(s3, bucket, key, key)
    handler = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && found=$(ls | tr "\\n" " ") && printf %s "$found" > listing']
    b = make_bridge(handler, PULL_MATCH_KEYS=r"\.txt$", EXECUTION_FILTER_EXPR="length == 3")
    assert b.process_messages(one(bucket, "p/a.txt")) == []
    assert read(s3, bucket, "p/listing") == b"a.txt c.txt "


def test_objects_whose_keys_are_unsafe_paths_are_not_pulled(bucket, s3, make_bridge, caplog):
    for key in ("p/ok.txt", "p/../escape.txt", "p//double.txt", "p/./dot.txt"):
        put(s3, bucket, key, "x")
    handler = [
        "/bin/sh",
        "-c",
        'cd "$ROOT_FOLDER" && found=$(find . -type f | sort | tr "\\n" " ") && printf %s "$found" > found',
    ]
    assert make_bridge(handler).process_messages(one(bucket, "p/ok.txt")) == []
    assert read(s3, bucket, "p/found") == b"./ok.txt "
    assert f"s3://{bucket}/p/../escape.txt" in caplog.text


def test_the_listing_reads_every_page(bucket, s3, make_bridge):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: put(s3, bucket, f"many/{i:05d}", b""), range(1005)))
    counter = make_bridge(
        ["/bin/sh", "-c", 'echo ran > "$ROOT_FOLDER/ran"'],
        EXECUTION_FILTER_EXPR="length == 1005",
        PULL_MATCH_KEYS="^none$",
    )
    assert counter.process_messages(one(bucket, "many/00000")) == []
    assert read(s3, bucket, "many/ran") == b"ran\n"


def test_an_object_larger_than_16_mib_goes_down_and_up_in_multipart(bucket, s3, make_bridge, tmp_path):
    big = bytes(range(256)) * (17 * 4096)
    s3.upload_file(str(_write(tmp_path / "big", big)), bucket, "big/blob.bin")
    handler = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && cp blob.bin copy.bin && printf "!" >> copy.bin']
    assert make_bridge(handler).process_messages(one(bucket, "big/blob.bin")) == []
    head = s3.head_object(Bucket=bucket, Key="big/copy.bin")
    assert head["ContentLength"] == len(big) + 1
    assert "-" in head["ETag"], "a multipart upload has a dashed ETag"
    assert read(s3, bucket, "big/copy.bin") == big + b"!"


def _write(path, data):
    path.write_bytes(data)
    return path
