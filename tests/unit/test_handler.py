"""The handler runner: exit statuses, timeouts, and its output relayed line by line in JSON mode."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time

import pytest

import bridge
from helpers import stopped_within


def run(command, timeout=None, relay=False) -> int:
    supervisor = bridge.Supervisor()
    return supervisor.wait_handler(supervisor.start_handler(command, os.environ, relay), timeout)


def test_handler_exit_status_and_signal_are_returned():
    assert run(["/bin/sh", "-c", "exit 3"]) == 3
    assert run(["/bin/sh", "-c", "kill -9 $$"]) == -9


def test_a_missing_handler_program_fails_the_group():
    with pytest.raises(bridge.GroupError, match="could not start"):
        run(["/nonexistent/handler"])


def test_a_handler_past_its_timeout_and_its_children_are_killed(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = f"sleep 60 & echo $! > {pidfile}; trap '' TERM; wait"
    started = time.monotonic()
    with pytest.raises(bridge.GroupError, match="timed out") as raised:
        run(["/bin/sh", "-c", script], 0.5)
    assert raised.value.outcome == "timed_out"
    assert time.monotonic() - started < 0.5 + stopped_within()
    child = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.fixture
def json_log():
    """The bridge's log as JSON lines, the way it writes them in JSON mode."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(bridge.LogFormat(as_json=True))
    saved = bridge.log.handlers[:], bridge.log.level, bridge.log.propagate
    bridge.log.handlers[:], bridge.log.propagate = [handler], False
    bridge.log.setLevel(logging.DEBUG)
    yield lambda: [json.loads(line) if line.startswith("{") else line for line in stream.getvalue().splitlines()]
    bridge.log.handlers[:], bridge.log.propagate = saved[0], saved[2]
    bridge.log.setLevel(saved[1])


HANDLER = r"""
import os, sys
for n in range(3000):
    print(f"out {n}", flush=n % 7 == 0)
    sys.stderr.write(f"err {n}\n")
print("x" * 200_000)
print('{"a": ' + "[" * 5000)  # too deep for json: a line of text, and the relay goes on
print("a" * 32767 + "é" + "tail")  # a character across a piece boundary stays whole
print('{"level": "WARN", "message": "own record"}')
sys.stdout.flush()
sys.stderr.buffer.write(b"not utf-8: \xff\xfe\n")
sys.stderr.write("Traceback (most recent call last): no newline at the end")
"""


def test_json_mode_relays_every_line_in_order_with_a_level_lambda_keeps(json_log):
    assert run(["python3", "-c", HANDLER], relay=True) == 0
    lines = json_log()
    records = [line for line in lines if isinstance(line, dict) and line.get("stream")]
    out = [r["message"] for r in records if r["stream"] == "stdout"]
    err = [r["message"] for r in records if r["stream"] == "stderr"]
    assert out[:3000] == [f"out {n}" for n in range(3000)] and "".join(out[3000:-3]) == "x" * 200_000
    assert out[-3] == '{"a": ' + "[" * 5000 and "".join(out[-2:]) == "a" * 32767 + "é" + "tail"
    assert all(len(piece) <= bridge.HANDLER_LINE_MAX for piece in out)
    assert err == [*(f"err {n}" for n in range(3000)), "not utf-8: \ufffd\ufffd", err[-1]]
    assert err[-1] == "Traceback (most recent call last): no newline at the end"
    assert {r["level"] for r in records if r["stream"] == "stdout"} == {"INFO"}
    assert {r["level"] for r in records if r["stream"] == "stderr"} == {"ERROR"}
    (own,) = [line for line in lines if isinstance(line, dict) and line.get("message") == "own record"]
    assert own["level"] == "WARN" and "stream" not in own, "a handler's own JSON line keeps its level"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", own["timestamp"]), (
        "and gets a timestamp Lambda reads"
    )
    assert all(r["logger"] == "s3-event-bridge.handler" for r in records)


def test_a_handler_writing_a_lot_is_drained_to_its_end(json_log):
    """16 MiB through the relay: the handler ends on its own, and every byte arrives."""
    assert run(["/bin/sh", "-c", "head -c 16777216 /dev/zero | tr '\\0' 'a' | fold -w 1000"], 120, relay=True) == 0
    assert sum(len(r["message"]) for r in json_log() if isinstance(r, dict)) == 16 * 1024 * 1024


def test_text_mode_passes_the_handlers_output_through_untouched(capfd):
    assert run(["/bin/sh", "-c", "echo to-stdout; echo to-stderr >&2"]) == 0
    captured = capfd.readouterr()
    assert (captured.out, captured.err) == ("to-stdout\n", "to-stderr\n")
