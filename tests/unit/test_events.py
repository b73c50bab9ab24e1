"""Every envelope in tests/data/events yields exactly the references it lists."""

import json
from pathlib import Path

import pytest

import bridge

CASES = sorted((Path(__file__).parent.parent / "data" / "events").glob("*.json"))


def refs(pairs):
    return [bridge.ObjectRef(b, k) for b, k in pairs]


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_event_fixture_yields_its_references(path):
    case = json.loads(path.read_text(encoding="utf-8"))
    payload = case["payload"]
    if "messages" in case:
        assert bridge.is_sqs_batch(payload)
        messages = [bridge.parse_sqs_record(record) for record in payload["Records"]]
        assert [m.id for m in messages] == [m["id"] for m in case["messages"]]
        for got, want in zip(messages, case["messages"]):
            if "error" in want:
                assert want["error"] in got.error
                assert got.refs == ()
            else:
                assert got.error is None
                assert list(got.refs) == refs(want["refs"])
    elif "error" in case:
        assert not bridge.is_sqs_batch(payload)
        with pytest.raises(bridge.EventError, match=case["error"]):
            bridge.parse_event(payload)
    else:
        assert not bridge.is_sqs_batch(payload)
        assert bridge.parse_event(payload) == refs(case["refs"])


def test_every_envelope_kind_has_a_fixture():
    names = {p.stem for p in CASES}
    for kind in ("s3_direct", "sqs_s3", "sqs_sns_s3", "sqs_eventbridge", "eventbridge_direct", "test_event_direct"):
        assert kind in names
    assert any("garbage" in n for n in names)


@pytest.mark.parametrize(
    "raw, decoded",
    [
        ("a+b.txt", "a b.txt"),
        ("a%2Bb.txt", "a+b.txt"),
        ("in+put%2Fa%2Bb+%C3%A9.txt", "in put/a+b é.txt"),
        ("plain/path/é.txt", "plain/path/é.txt"),
        ("100%25.txt", "100%.txt"),
    ],
)
def test_notification_keys_are_form_decoded(raw, decoded):
    assert bridge.decode_key(raw, "b") == decoded


def test_a_sqs_record_without_message_id_cannot_be_reported_and_is_an_error():
    with pytest.raises(bridge.EventError, match="messageId"):
        bridge.parse_sqs_record({"body": "{}"})


def test_deeply_nested_body_is_an_error_of_that_message_only():
    body = "[" * 100_000 + "]" * 100_000
    message = bridge.parse_sqs_record({"messageId": "deep", "body": body})
    assert message.error and message.refs == ()


@pytest.mark.parametrize("key", ["a/b.txt", "in put/a+b é.txt", "100%/~?#&=;:'*/😀.bin", "a//b", "ends/"])
def test_a_backfill_notification_reads_back_as_the_object_it_names_and_fits_s3s_event_schema(key):
    """Powertools' parser is what Lambda users validate S3 events with: it requires every field S3's own carry."""
    from aws_lambda_powertools.utilities.parser.models import S3Model

    listed = {"Key": key, "Size": 3, "ETag": '"abc"', "LastModified": "2026-11-30T00:00:00.000Z", "Owner": {"ID": "o1"}}
    body = bridge.notification_body("bkt", listed, "eu-west-1", {"RequestId": "R1", "HostId": "H1"})
    assert bridge.parse_body(body) == [bridge.ObjectRef("bkt", key)]
    (record,) = S3Model.model_validate_json(body).Records
    assert (record.awsRegion, record.s3.bucket.ownerIdentity.principalId, record.s3.object.eTag) == (
        "eu-west-1",
        "o1",
        "abc",
    )
    assert record.responseElements.x_amz_request_id == "R1" and record.s3.configurationId == bridge.BACKFILL_ID
