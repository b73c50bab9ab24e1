"""Log lines Lambda's controls understand: its level names, AWS's error fields, and the work each line serves."""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest

import bridge
from helpers import LAMBDA_ORDER, lambda_keeps


def record(level: int, message: str = "m", **extra) -> logging.LogRecord:
    entry = logging.LogRecord("s3-event-bridge", level, __file__, 1, message, (), None)
    entry.__dict__.update(extra)
    return entry


@pytest.mark.parametrize(
    "level, name",
    [
        (logging.DEBUG, "DEBUG"),
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARN"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "FATAL"),
    ],
)
def test_lines_use_lambdas_level_names_in_json_and_text(level, name):
    line = bridge.LogFormat(as_json=True).format(record(level))
    assert json.loads(line)["level"] == name
    assert lambda_keeps(line, name) and (name == "FATAL" or not lambda_keeps(line, LAMBDA_ORDER[-1]))
    assert bridge.LogFormat(as_json=False).format(record(level)).startswith(f"[{name}]\t")


def test_a_crash_carries_error_type_message_and_stack_trace_as_aws_runtime_client_writes_them():
    try:
        raise bridge.GroupError("it broke")
    except bridge.GroupError:
        entry = record(logging.ERROR, "unexpected error")
        entry.exc_info = sys.exc_info()
    line = json.loads(bridge.LogFormat(as_json=True).format(entry))
    assert (line["errorType"], line["errorMessage"], line["message"]) == (
        "Bridge.GroupFailed",
        "it broke",
        "unexpected error",
    )
    assert isinstance(line["stackTrace"], list) and all(isinstance(frame, str) for frame in line["stackTrace"])
    assert "test_logging.py" in line["stackTrace"][0]


def test_a_failure_that_is_no_crash_carries_its_type_and_message_without_a_stack_trace():
    error = bridge.GroupError("handler exited with status 1")
    line = json.loads(bridge.LogFormat(as_json=True).format(record(logging.ERROR, error=error)))
    assert (line["errorType"], line["errorMessage"]) == ("Bridge.GroupFailed", "handler exited with status 1")
    assert "stackTrace" not in line


def test_lines_carry_the_request_id_and_the_work_under_way(monkeypatch):
    monkeypatch.setattr(bridge.LogFormat, "request_id", "req-1")
    monkeypatch.setattr(bridge.LogFormat, "work", {"message_ids": ["m1", "m2"]})
    line = json.loads(bridge.LogFormat(as_json=True).format(record(logging.WARNING, fields={"bucket": "b"})))
    assert (line["requestId"], line["message_ids"], line["bucket"]) == ("req-1", ["m1", "m2"], "b")
    text = bridge.LogFormat(as_json=False).format(record(logging.WARNING, "a\nb"))
    assert "\n" not in text and 'message_ids=["m1", "m2"]' in text and "\treq-1\t" in text


@pytest.mark.parametrize(
    "line, level",
    [
        ('{"level": "warn", "msg": "own"}', "WARN"),
        ('{"level": "WARNING", "msg": "own"}', "WARN"),
        ('{"level": "critical", "msg": "own"}', "FATAL"),
        ('{"level": "Error", "timestamp": "2026-12-07T01:02:03.5+02:00"}', "ERROR"),
        ('{"level": "notice"}', None),
        ('{"level": 40}', None),
        ("[1, 2]", None),
        ('{"a": ' + "[" * 5000, None),
    ],
)
def test_a_handlers_own_json_line_keeps_its_level_and_gets_what_lambda_needs(line, level, monkeypatch):
    monkeypatch.setattr(bridge.LogFormat, "request_id", "r1")
    own = bridge._own_record(line, {"message_ids": ["m"]}, "2026-12-07T00:00:00.000Z")
    if level is None:
        assert own is None
        return
    record = json.loads(own[1])
    assert (own[0], record["level"]) == (bridge.LAMBDA_LEVELS[level], level)
    assert record["timestamp"] == json.loads(line).get("timestamp", "2026-12-07T00:00:00.000Z")
    assert (record["requestId"], record["message_ids"]) == ("r1", ["m"])
    assert lambda_keeps(own[1], level)


def test_the_filter_used_here_is_lambdas_documented_rule():
    assert lambda_keeps("a traceback line", "INFO") and not lambda_keeps("a traceback line", "WARN")

    def line(level):
        return json.dumps({"level": level, "timestamp": "2026-12-07T00:00:00.000Z"})

    assert not lambda_keeps(line("WARNING"), "WARN"), "an unknown name counts as INFO"
    assert lambda_keeps(line("debug"), "DEBUG") and not lambda_keeps(line("debug"), "INFO")
    assert not lambda_keeps('{"level": "ERROR"}', "WARN"), "no timestamp: INFO"


def readme_blocks(language: str) -> list[str]:
    text = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Logging\n") : text.index("**Metrics, with no dependency.**")]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def test_the_readmes_example_lines_are_the_bridges_own_shape(monkeypatch):
    (text_block,) = readme_blocks("")
    (json_block,) = readme_blocks("json")
    for line in text_block.splitlines():
        level, stamp, request_id, _ = line.split("\t", 3)
        assert level.strip("[]") in LAMBDA_ORDER and stamp.endswith("Z") and request_id
    monkeypatch.setattr(bridge.LogFormat, "request_id", "r1")
    monkeypatch.setattr(bridge.LogFormat, "work", {"message_ids": ["m"]})
    for example in map(json.loads, json_block.splitlines()):
        assert example["level"] in LAMBDA_ORDER
        fields = {k: v for k, v in example.items() if k not in ("timestamp", "level", "message", "logger")}
        fields = {k: v for k, v in fields.items() if k not in ("requestId", "message_ids", "errorType", "errorMessage")}
        fields.pop("stackTrace", None)
        error = bridge.GroupError(example["errorMessage"]) if "errorType" in example else None
        entry = record(bridge.LAMBDA_LEVELS[example["level"]], example["message"], fields=fields, error=error)
        entry.name = example["logger"]
        made = json.loads(bridge.LogFormat(as_json=True).format(entry))
        expected = [k for k in example if k != "stackTrace"]
        assert list(made) == expected, example["message"]
