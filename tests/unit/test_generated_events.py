"""Generated input through event parsing: only EventError ever escapes, and refs are exact."""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import garbage_bodies, valid_events, wrong_shapes

import bridge

BUCKETS = st.sampled_from(["bkt-a", "bkt-b"])
SETTINGS = settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


@SETTINGS
@given(valid_events(BUCKETS))
def test_every_valid_envelope_yields_exactly_its_created_objects(pair):
    event, named = pair
    assert [(r.bucket, r.key) for r in bridge.parse_event(event)] == named
    message = bridge.parse_sqs_record({"messageId": "m", "body": json.dumps(event)})
    assert message.error is None and [(r.bucket, r.key) for r in message.refs] == named


@SETTINGS
@given(garbage_bodies(BUCKETS))
def test_a_garbage_body_is_an_error_of_its_own_message_only(body):
    message = bridge.parse_sqs_record({"messageId": "m", "body": body})
    assert message.id == "m" and message.error and message.refs == ()


@SETTINGS
@given(st.one_of(wrong_shapes, st.lists(wrong_shapes, max_size=3).map(lambda r: {"Records": r})))
def test_parsing_raises_nothing_but_event_error(payload):
    with contextlib.suppress(bridge.EventError):
        bridge.parse_event(payload)
