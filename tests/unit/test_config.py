"""Configuration: defaults, and one refusal per variable that names it."""

import json
import logging
import re
from pathlib import Path

import pytest

import bridge


def from_env(argv=(), **env):
    return bridge.Config.from_env(env, argv)


def test_defaults_match_the_seed():
    config = from_env(HANDLER_COMMAND="python handler.py")
    assert config.handler == ("/bin/sh", "-c", "python handler.py")
    assert config.match_key is None
    assert config.pull_parent_dirs == 0
    assert config.pull_match_keys is None  # every listed object is pulled
    assert config.execution_filter is None
    assert config.target_bucket is None
    assert (config.root_folder_var, config.bucket_var, config.key_prefix_var) == ("ROOT_FOLDER", "BUCKET", "KEY_PREFIX")
    assert config.handler_timeout is None
    assert config.transfer_concurrency == 16
    assert config.log_level == logging.INFO and not config.log_json


def test_arguments_win_over_handler_command():
    assert from_env(["python3", "h.py"], HANDLER_COMMAND="other").handler == ("python3", "h.py")


def test_every_setting_is_read():
    config = from_env(
        HANDLER_COMMAND="x",
        MATCH_KEY=r"input\.txt\z",
        PULL_PARENT_DIRS="-1",
        PULL_MATCH_KEYS=r"\.txt$, ^data/ ,",
        EXECUTION_FILTER_EXPR="length > 0",
        TARGET_BUCKET="out",
        ROOT_FOLDER_VAR="DIR",
        BUCKET_VAR="B",
        KEY_PREFIX_VAR="P",
        HANDLER_TIMEOUT="1.5",
        TRANSFER_CONCURRENCY="4",
        AWS_LAMBDA_LOG_LEVEL="warn",
        AWS_LAMBDA_LOG_FORMAT="JSON",
    )
    assert config.match_key.search("a/input.txt") and not config.match_key.search("a/input.txt\n")
    assert config.pull_parent_dirs == -1
    assert [p.pattern for p in config.pull_match_keys] == [r"\.txt\Z", "^data/"]
    assert config.execution_filter is not None
    assert config.target_bucket == "out"
    assert (config.root_folder_var, config.bucket_var, config.key_prefix_var) == ("DIR", "B", "P")
    assert config.handler_timeout == 1.5 and config.transfer_concurrency == 4
    assert config.log_level == logging.WARNING and config.log_json


@pytest.mark.parametrize(
    "given, level", [("WARNING", logging.WARNING), (" critical ", logging.CRITICAL), ("TRACE", 10)]
)
def test_pythons_level_names_are_read_as_lambdas(given, level):
    assert from_env(HANDLER_COMMAND="x", AWS_LAMBDA_LOG_LEVEL=given).log_level == level


def test_filter_file_is_read_as_utf8(tmp_path):
    path = tmp_path / "filter.jq"
    path.write_text('any(.Key == "é")', encoding="utf-8")
    config = from_env(HANDLER_COMMAND="x", EXECUTION_FILTER_FILE=str(path))
    assert bridge.filter_verdict(config.execution_filter, [{"Key": "é"}]) is True


def test_blank_filter_variables_mean_no_filter():
    assert from_env(HANDLER_COMMAND="x", EXECUTION_FILTER_EXPR="  ", EXECUTION_FILTER_FILE="").execution_filter is None


BAD = [
    ({}, "HANDLER_COMMAND"),
    ({"MATCH_KEY": "a("}, "MATCH_KEY"),
    ({"MATCH_KEY": r"\p{Greek}"}, "MATCH_KEY"),
    ({"PULL_PARENT_DIRS": "one"}, "PULL_PARENT_DIRS"),
    ({"PULL_PARENT_DIRS": "1.5"}, "PULL_PARENT_DIRS"),
    ({"PULL_MATCH_KEYS": "ok,[bad"}, "PULL_MATCH_KEYS"),
    ({"EXECUTION_FILTER_EXPR": "map(", "EXECUTION_FILTER_FILE": ""}, "EXECUTION_FILTER_EXPR"),
    (
        {"EXECUTION_FILTER_EXPR": "true", "EXECUTION_FILTER_FILE": "/f"},
        "EXECUTION_FILTER_EXPR and EXECUTION_FILTER_FILE",
    ),
    ({"EXECUTION_FILTER_FILE": "/nonexistent/filter.jq"}, "EXECUTION_FILTER_FILE"),
    ({"ROOT_FOLDER_VAR": "NOT VALID"}, "ROOT_FOLDER_VAR"),
    ({"BUCKET_VAR": "1BAD"}, "BUCKET_VAR"),
    ({"KEY_PREFIX_VAR": "A=B"}, "KEY_PREFIX_VAR"),
    *(
        ({variable: name}, variable)
        for variable, name in (
            ("BUCKET_VAR", "LD_PRELOAD"),
            ("KEY_PREFIX_VAR", "PATH"),
            ("ROOT_FOLDER_VAR", "PYTHONPATH"),
            ("BUCKET_VAR", "NODE_OPTIONS"),
            ("KEY_PREFIX_VAR", "PERL5LIB"),
            ("BUCKET_VAR", "AWS_ENDPOINT_URL"),
            ("ROOT_FOLDER_VAR", "BASH_ENV"),
            ("KEY_PREFIX_VAR", "JAVA_TOOL_OPTIONS"),
            ("BUCKET_VAR", "GLIBC_TUNABLES"),
        )
    ),
    ({"BUCKET_VAR": "ROOT_FOLDER"}, "ROOT_FOLDER_VAR"),
    ({"SOURCE_BUCKETS": "a,b", "EXPECTED_BUCKET_OWNER": "12345"}, "EXPECTED_BUCKET_OWNER"),
    ({"HANDLER_TIMEOUT": "soon"}, "HANDLER_TIMEOUT"),
    ({"HANDLER_TIMEOUT": "0"}, "HANDLER_TIMEOUT"),
    ({"TRANSFER_CONCURRENCY": "0"}, "TRANSFER_CONCURRENCY"),
    ({"AWS_LAMBDA_LOG_LEVEL": "LOUD"}, "AWS_LAMBDA_LOG_LEVEL"),
    ({"AWS_LAMBDA_LOG_FORMAT": "XML"}, "AWS_LAMBDA_LOG_FORMAT"),
    ({"METRICS_NAMESPACE": "Pipelines"}, "METRICS_NAMESPACE"),
    ({"METRICS_NAMESPACE": "AWS/Lambda", "AWS_LAMBDA_LOG_FORMAT": "JSON"}, "METRICS_NAMESPACE"),
    ({"METRICS_NAMESPACE": "bad\nname", "AWS_LAMBDA_LOG_FORMAT": "JSON"}, "METRICS_NAMESPACE"),
    ({"METRICS_NAMESPACE": "N", "AWS_LAMBDA_LOG_FORMAT": "JSON", "AWS_LAMBDA_LOG_LEVEL": "WARN"}, "METRICS_NAMESPACE"),
    ({"GROUP_BY": "bucket"}, "GROUP_BY"),
    ({"SQS_VISIBILITY_TIMEOUT": "43201"}, "SQS_VISIBILITY_TIMEOUT"),
    ({"TRANSFER_CONCURRENCY": "1001"}, "TRANSFER_CONCURRENCY"),
    ({"SQS_VISIBILITY_TIMEOUT": "0"}, "SQS_VISIBILITY_TIMEOUT"),
    ({"SQS_MAX_NUMBER_OF_MESSAGES": "11"}, "SQS_MAX_NUMBER_OF_MESSAGES"),
    ({"SQS_MAX_NUMBER_OF_MESSAGES": "ten"}, "SQS_MAX_NUMBER_OF_MESSAGES"),
    ({"SQS_WAIT_TIME_SECONDS": "21"}, "SQS_WAIT_TIME_SECONDS"),
    ({"SQS_WAIT_TIME_SECONDS": "-1"}, "SQS_WAIT_TIME_SECONDS"),
]


@pytest.mark.parametrize("env, variable", BAD, ids=[f"{v}={list(e.values())}" for e, v in BAD])
def test_a_bad_value_is_refused_naming_its_variable(env, variable):
    env = {"HANDLER_COMMAND": "x", **env} if variable != "HANDLER_COMMAND" else env
    modes = next((modes for name, _, _, _, modes, _ in bridge.SETTINGS if name == variable), "").split()
    with pytest.raises(bridge.ConfigError) as caught:
        bridge.Config.from_env(env, (), "lambda" if not modes or "lambda" in modes else modes[0])
    assert str(caught.value).startswith(variable)


def test_backfill_refuses_a_bucket_and_a_prefix_read_from_one_variable():
    env = {"BUCKET_VAR": "X", "KEY_PREFIX_VAR": "X", "X": "bucket", "SQS_QUEUE_URL": "q"}
    with pytest.raises(bridge.ConfigError, match="BUCKET_VAR and KEY_PREFIX_VAR must name different variables"):
        bridge.Config.from_env(env, (), "backfill")


def test_an_unreadable_filter_file_is_refused(tmp_path):
    path = tmp_path / "latin1.jq"
    path.write_bytes(b"\xff\xfe true")
    with pytest.raises(bridge.ConfigError, match="EXECUTION_FILTER_FILE"):
        from_env(HANDLER_COMMAND="x", EXECUTION_FILTER_FILE=str(path))


REGEXES = json.loads((Path(__file__).parents[1] / "data" / "regexes.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("case", REGEXES, ids=[f"{c['pattern'][:30]!r}~{c['key']!r}" for c in REGEXES])
def test_a_regex_means_what_the_regex_crate_means_or_is_refused(case):
    """Each row holds what Rust's regex crate 1.13 did with the pattern and the key (`regex_crate`:
    match, no match, or error) and what the bridge must do. The bridge may refuse any pattern; where
    both accept it they agree, except the documented Unicode differences of \\w and case folding."""
    try:
        got = bool(bridge.compile_regex(case["pattern"], "MATCH_KEY").search(case["key"]))
    except bridge.ConfigError as exc:
        assert str(exc).startswith("MATCH_KEY: cannot use the regex")
        got = "refused"
    assert got == case["bridge"]
    crate = case["regex_crate"]
    if crate in (True, False) and got != "refused":
        assert got == crate or case.get("known_difference")


def test_a_translated_named_group_keeps_its_name():
    assert bridge.compile_regex(r"(?<n>\d)", "MATCH_KEY").search("7").group("n") == "7"
    assert isinstance(bridge.compile_regex("x", "MATCH_KEY"), re.Pattern)


@pytest.mark.parametrize(
    "verdict_expr, objects, expected",
    [
        ("false", [], False),
        ("true", [], True),
        ("null", [], None),
        ("empty", [], "no output"),
        ("false, true", [], False),
        ("true, false", [], True),
        ("length", [{"Key": "a"}], 1),
    ],
)
def test_filter_verdict_is_the_first_output(verdict_expr, objects, expected):
    program = bridge.compile_filter(verdict_expr, "EXECUTION_FILTER_EXPR")
    verdict = bridge.filter_verdict(program, objects)
    assert (verdict is bridge._NO_OUTPUT) if expected == "no output" else verdict == expected


def test_a_jq_runtime_error_fails_the_group():
    program = bridge.compile_filter('error("boom")', "EXECUTION_FILTER_EXPR")
    with pytest.raises(bridge.GroupError, match="boom"):
        bridge.filter_verdict(program, [])


class Recording(dict):
    """An environment that remembers every name asked of it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.asked = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)


@pytest.mark.parametrize("mode", list(bridge.MODE_HELP))
def test_each_mode_reads_exactly_the_variables_its_help_lists(mode):
    environ = Recording(HANDLER_COMMAND="x")
    bridge.Config.from_env(environ, (), mode)
    listed = {name for name, field, _, _, modes, _ in bridge.SETTINGS if field and (not modes or mode in modes.split())}
    assert environ.asked - {"BUCKET", "KEY_PREFIX"} == listed


def test_every_variable_configuration_reads_is_in_the_help_table_and_the_readme():
    documented = {name for name, *_ in bridge.SETTINGS}
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    assert {name for name in documented if f"| `{name}` |" not in readme} == set(), "not in the README's table"


@pytest.mark.parametrize("mode", list(bridge.MODE_HELP))
def test_a_modes_help_lists_the_variables_it_reads_with_their_defaults(mode, capsys):
    assert bridge.main([mode, "--help"], environ={}) == 0
    text = capsys.readouterr().out
    for name, _, _, default, modes, _ in bridge.SETTINGS:
        if mode in modes.split() or not modes:
            assert re.search(rf"^  {name}{'=' + re.escape(default) if default else ''}\s", text, re.M), name
        else:
            assert f"  {name}" not in text, name
    assert ("SQS_QUEUE_URL" in text) == (mode in ("consume", "backfill"))
