"""Pure helpers of the Lambda transport, the handler runner and work folders."""

import time

import pytest

import bridge


@pytest.mark.parametrize(
    "address, host, port, base",
    [
        ("127.0.0.1:9001", "127.0.0.1", 9001, "/2018-06-01/runtime"),
        ("http://127.0.0.1:9009/.rt", "127.0.0.1", 9009, "/.rt/2018-06-01/runtime"),
        ("http://localhost:9009/.rt/", "localhost", 9009, "/.rt/2018-06-01/runtime"),
    ],
)
def test_runtime_api_address_is_host_port_or_url_with_prefix(address, host, port, base):
    api = bridge.RuntimeApi(address)
    assert (api.host, api.port, api.base) == (host, port, base)


def test_a_runtime_api_address_without_host_is_a_config_error():
    with pytest.raises(bridge.ConfigError, match="AWS_LAMBDA_RUNTIME_API"):
        bridge.RuntimeApi("http://")


def test_plausible_deadline_is_obeyed_and_emulator_deadline_ignored(caplog):
    now = 1_800_000_000.0
    assert bridge.invocation_deadline(str(int(now * 1000) + 5000), now) == now + 5
    assert bridge.invocation_deadline("600000", now) is None
    assert "implausible" in caplog.text
    assert bridge.invocation_deadline(None, now) is None
    assert bridge.invocation_deadline("soon", now) is None


def test_handler_limit_keeps_a_reserve_for_uploads():
    now = time.time()
    assert bridge.handler_time_limit(None, None) is None
    assert bridge.handler_time_limit(7.0, None) == 7.0
    assert 7.9 < bridge.handler_time_limit(None, now + 10) <= 8.0
    assert bridge.handler_time_limit(3.0, now + 10) == 3.0
    assert 269 < bridge.handler_time_limit(None, now + 300) <= 270
    assert bridge.handler_time_limit(None, now - 5) == 0.001


def test_error_payload_carries_type_message_and_header():
    try:
        raise bridge.GroupError("it broke")
    except bridge.GroupError as exc:
        payload, headers = bridge._error_payload(exc)
    assert payload["errorType"] == "Bridge.GroupFailed" == headers["Lambda-Runtime-Function-Error-Type"]
    assert payload["errorMessage"] == "it broke"
    assert payload["stackTrace"]


@pytest.mark.parametrize(
    "address", ["127.0.0.1:abc", "http://", "127.0.0.1:99999", " 127.0.0.1:9001", "host:0", "host:", "https://h:1"]
)
def test_a_runtime_api_address_that_cannot_be_read_is_a_config_error(address):
    with pytest.raises(bridge.ConfigError, match="AWS_LAMBDA_RUNTIME_API"):
        bridge.RuntimeApi(address)


def test_help_lists_the_modes_and_prepare_one_line_each(capsys):
    assert bridge.main(["--help"], environ={}) == 0
    lines = capsys.readouterr().out.splitlines()
    for name in ("lambda", "run", "consume", "local", "backfill", "--prepare DIR"):
        (line,) = [line.strip() for line in lines if line.strip().startswith(f"{name} ")]
        assert line[len(name) :].strip(), f"{name} has its help on the same line"
