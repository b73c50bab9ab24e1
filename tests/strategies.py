"""Hypothesis strategies for what can arrive at the bridge: every envelope, and garbage."""

from __future__ import annotations

import json
import urllib.parse

from hypothesis import strategies as st

HOSTILE_KEYS = [
    "../x",
    "a/../../etc/passwd",
    "/abs",
    "a//b",
    "a\x00b",
    "%2e%2e/x",
    "fail/input.txt",
    "ok/input.txt",
    "é/ü+ .txt",
    "",
]
keys = st.one_of(
    st.sampled_from(HOSTILE_KEYS),
    st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
    st.lists(st.sampled_from(["a", "fail", "..", ".", "", "é", "x y", "+"]), min_size=1, max_size=4).map("/".join),
)


def created(name: str) -> bool:
    return name.startswith("ObjectCreated")


def s3_record(bucket: str, key: str, event_name: str) -> dict:
    """As S3 (and moto) send it: the key form-encoded."""
    return {
        "eventName": event_name,
        "s3": {"bucket": {"name": bucket}, "object": {"key": urllib.parse.quote_plus(key)}},
    }


def valid_events(buckets):
    """(event, [(bucket, key), ...] it names) for every envelope the bridge reads."""
    names = st.sampled_from(["ObjectCreated:Put", "ObjectCreated:CompleteMultipartUpload", "ObjectRemoved:Delete"])
    record = st.tuples(buckets, keys, names)

    def s3(records):
        return {"Records": [s3_record(*r) for r in records]}, [(b, k) for b, k, n in records if created(n)]

    direct = st.lists(record, min_size=1, max_size=3).map(s3)
    via_sns = direct.map(lambda pair: ({"Type": "Notification", "Message": json.dumps(pair[0])}, pair[1]))
    detail_types = st.sampled_from(["Object Created", "Object Deleted", "Object Tags Added"])
    eventbridge = st.tuples(buckets, keys, detail_types).map(
        lambda t: (
            {"source": "aws.s3", "detail-type": t[2], "detail": {"bucket": {"name": t[0]}, "object": {"key": t[1]}}},
            [(t[0], t[1])] if t[2] == "Object Created" else [],
        )
    )
    test_event = st.just(({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"}, []))
    return st.one_of(direct, via_sns, eventbridge, test_event)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
wrong_shapes = st.one_of(
    json_values,
    st.builds(lambda v: {"Records": v}, json_values).filter(lambda e: e["Records"] != []),  # [] is a valid empty event
    st.builds(lambda v: {"Records": [{"eventName": "ObjectCreated:Put", "s3": v}]}, json_values),
    st.builds(lambda v: {"Type": "Notification", "Message": v}, json_values),
    st.builds(lambda v: {"source": "aws.s3", "detail-type": "Object Created", "detail": v}, json_values),
).filter(lambda v: not (isinstance(v, dict) and v.get("Event") == "s3:TestEvent"))


def garbage_bodies(buckets):
    """Message bodies no envelope accepts: never JSON, truncated, wrong types, huge, deeply nested."""
    truncated = (
        valid_events(buckets).map(lambda pair: json.dumps(pair[0])).map(lambda text: text[: max(1, len(text) // 2)])
    )
    return st.one_of(
        st.text(max_size=50).filter(lambda t: not _parses(t)),
        truncated.filter(lambda t: not _parses(t)),
        wrong_shapes.map(json.dumps),
        st.integers(1000, 50_000).map(lambda n: "[" * n + "]" * n),
        st.just('{"Records": [' + '"x",' * 100_000 + '"x"]}'),
        st.just("x" * 300_000),
    )


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
