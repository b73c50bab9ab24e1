"""`bootstrap local`: a folder is the bucket, no AWS anywhere."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridge
from helpers import BRIDGE, ROOT, stopped_within, wait_until

NO_AWS = {"PATH": os.environ["PATH"], "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}
#: A PID namespace whose PID 1 is what follows; killing `unshare` kills it, and with it the namespace.
CONTAINER = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]


def local(*args, cwd=ROOT, **settings):
    command = [*BRIDGE, "local", *args]
    return subprocess.run(command, env={**NO_AWS, **settings}, capture_output=True, text=True, timeout=120, cwd=cwd)


def bucket_with_input(tmp_path: Path) -> Path:
    """A bucket folder holding one object, input.txt."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "input.txt").write_text("x")
    return bucket


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_the_wordcount_example_runs_with_one_command():
    result = subprocess.run(
        ["bash", "examples/wordcount/run.sh"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert "rounds: 3" in result.stdout
    assert [line.split() for line in result.stdout.splitlines() if line.startswith(("map.env", "reduce.env"))] == [
        ["map.env", "3", "0", "0", "3"],
        ["reduce.env", "1", "0", "0", "1"],
    ]
    assert "dog 4\nthe 4\nfox 3\n" in result.stdout


def test_the_reduce_waits_for_every_map_output(tmp_path):
    bucket = tmp_path / "bucket"
    for name in ("a", "b"):
        (bucket / "data" / name).mkdir(parents=True)
        (bucket / "data" / name / "input.txt").write_text(f"{name} words\n")
    functions = ["--function", "examples/wordcount/map.env", "--function", "examples/wordcount/reduce.env"]
    result = local("--bucket-dir", str(bucket), *functions, "data/a/input.txt")
    assert result.returncode == 0, result.stderr
    assert "data/total.txt" not in files(bucket), "b has no output yet: the barrier skips"
    assert "skipped" in result.stdout.splitlines()[1] and result.stdout.splitlines()[3].split()[2] == "1"
    result = local("--bucket-dir", str(bucket), *functions, "data/b/input.txt")
    assert result.returncode == 0, result.stderr
    assert (bucket / "data" / "total.txt").read_text() == "words 2\na 1\nb 1\n"


def test_outputs_that_match_are_processed_round_after_round(tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "chain").mkdir(parents=True)
    (bucket / "chain" / "step0.txt").write_text("0")
    step = 'n=$(ls "$ROOT_FOLDER" | grep -c step); if [ "$n" -lt 4 ]; then echo "$n" > "$ROOT_FOLDER/step$n.txt"; fi'
    result = local(
        "--bucket-dir", str(bucket), "chain/step0.txt", "--", "/bin/sh", "-c", step, MATCH_KEY=r"step\d\.txt$"
    )
    assert result.returncode == 0, result.stderr
    assert files(bucket) == [f"chain/step{n}.txt" for n in range(4)]
    assert "rounds: 4" in result.stdout


def test_a_runaway_loop_stops_at_the_round_limit_naming_the_keys(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "seed.txt").write_text("x")
    again = 'touch "$ROOT_FOLDER/more-$(ls "$ROOT_FOLDER" | wc -l | tr -d " ").txt"'
    result = local("--bucket-dir", str(bucket), "--max-rounds", "3", "--all", "--", "/bin/sh", "-c", again)
    assert result.returncode == 1
    assert "stopped after 3 rounds" in result.stderr and "more-3.txt" in result.stderr
    assert "rounds: 3" in result.stdout


def test_the_filter_sees_the_s3_object_shape_with_an_md5_etag(tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "d").mkdir(parents=True)
    (bucket / "d" / "input.txt").write_bytes(b"hello")
    etag = hashlib.md5(b"hello").hexdigest()
    shape = f'.[0] | .Key == "d/input.txt" and .Size == 5 and .ETag == "\\"{etag}\\"" and .StorageClass == "STANDARD"'
    ran = ["/bin/sh", "-c", 'touch "$ROOT_FOLDER/ran"']
    result = local(
        "--bucket-dir",
        str(bucket),
        "--all",
        "--",
        *ran,
        EXECUTION_FILTER_EXPR=f'{shape} and (.LastModified | endswith("Z"))',
    )
    assert result.returncode == 0, result.stderr
    assert (bucket / "d" / "ran").exists()


def test_target_dir_receives_outputs_which_trigger_nothing(tmp_path):
    bucket, target = tmp_path / "bucket", tmp_path / "out"
    (bucket / "p").mkdir(parents=True)
    (bucket / "p" / "input.txt").write_text("abc")
    upper = 'cd "$ROOT_FOLDER" && tr a-z A-Z < input.txt > up && mv up input.txt'
    result = local("--bucket-dir", str(bucket), "--target-dir", str(target), "--all", "--", "/bin/sh", "-c", upper)
    assert result.returncode == 0, result.stderr
    assert (target / "p" / "input.txt").read_text() == "ABC"
    assert (bucket / "p" / "input.txt").read_text() == "abc"
    assert "rounds: 1" in result.stdout


def test_a_failed_group_makes_the_run_exit_1(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (bucket / "x.txt").write_text("x")
    result = local("--bucket-dir", str(bucket), "--all", "--", "false")
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1].split() == ["handler", "0", "0", "1", "0"]


def test_bad_local_arguments_are_usage_errors(tmp_path):
    bad_env = tmp_path / "bad.env"
    bad_env.write_text("NOT A LINE\n")
    (tmp_path / "bucket").mkdir()
    assert local("--bucket-dir", str(tmp_path / "missing"), "--all", "--", "true").returncode == 2
    result = local("--bucket-dir", str(tmp_path / "bucket"), "--function", str(bad_env), "--all")
    assert result.returncode == 2 and "bad.env:1" in result.stderr
    result = local("--bucket-dir", str(tmp_path / "bucket"), "nope.txt", "--", "true")
    assert result.returncode == 2 and "nope.txt" in result.stderr


def test_watch_picks_up_a_new_file_and_stops_cleanly(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    upper = 'tr a-z A-Z < "$ROOT_FOLDER/input.txt" > "$ROOT_FOLDER/output.txt"'
    log_path = tmp_path / "log"
    with open(log_path, "wb") as log:
        command = [*BRIDGE, "local", "--bucket-dir", str(bucket), "--watch", "--", "/bin/sh", "-c", upper]
        env = {**NO_AWS, "MATCH_KEY": r"input\.txt$"}
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        try:
            wait_until(lambda: "watching" in log_path.read_text(), 20, "the watcher to start")
            (bucket / "new").mkdir()
            (bucket / "new" / "input.txt").write_text("late arrival")
            wait_until(lambda: (bucket / "new" / "output.txt").exists(), 20, "the new file's output")
            process.send_signal(signal.SIGTERM)
            out, _ = process.communicate(timeout=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0
    assert (bucket / "new" / "output.txt").read_text() == "LATE ARRIVAL"
    assert out.splitlines()[-1].split() == ["handler", "1", "0", "0", "1"]


def test_a_key_on_the_command_line_that_would_leave_the_bucket_is_refused(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    (tmp_path / "outside.txt").write_text("outside")
    write = ["/bin/sh", "-c", 'echo x > "$ROOT_FOLDER/out.txt"']
    for key in ("../outside.txt", "/etc/hostname", "a//b.txt", "./x.txt"):
        result = local("--bucket-dir", str(bucket), key, "--", *write)
        assert result.returncode == 2 and key in result.stderr and "not a safe key" in result.stderr
    assert files(tmp_path) == ["outside.txt"]


def watch(bucket: Path, log_path: Path, handler: str, **settings) -> subprocess.Popen:
    command = [*BRIDGE, "local", "--bucket-dir", str(bucket), "--watch", "--", "/bin/sh", "-c", handler]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env={**NO_AWS, **settings}, stdout=subprocess.PIPE, stderr=log, text=True)
    wait_until(lambda: "watching" in log_path.read_text(), 20, "the watcher to start")
    return process


def test_watch_survives_files_that_vanish_mid_scan_and_processes_what_stays(tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "in").mkdir(parents=True)
    upper = 'tr a-z A-Z < "$ROOT_FOLDER/input.txt" > "$ROOT_FOLDER/output.txt"'
    process = watch(bucket, tmp_path / "log", upper, MATCH_KEY=r"input\.txt$")
    try:
        saving_until, n = time.monotonic() + 3, 0  # an editor saving: a temporary file renamed over the real one
        while time.monotonic() < saving_until or n == 0:
            n += 1
            temporary = bucket / "in" / f".input.txt.{n}.tmp"
            temporary.write_text(f"version {n}")
            temporary.rename(bucket / "in" / "input.txt")
        wait_until(lambda: (bucket / "in" / "output.txt").exists(), 20, "the saved file's output")
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, (tmp_path / "log").read_text()
    assert (bucket / "in" / "output.txt").read_text() == f"VERSION {n}"
    assert "Traceback" not in (tmp_path / "log").read_text()


def held_copy(gate, first: str) -> str:
    """A handler copying input.txt to output.txt; the round where `first` holds signals gate.in, then waits for gate."""
    return (
        f"if {first}; then touch {gate}.used {gate}.in; while [ ! -e {gate} ]; do :; done; fi;"
        ' cp "$ROOT_FOLDER/input.txt" "$ROOT_FOLDER/output.txt"'
    )


def test_watch_processes_a_file_that_arrives_while_a_round_runs_in_a_later_round(tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "first").mkdir(parents=True)
    gate = tmp_path / "gate"
    process = watch(bucket, tmp_path / "log", held_copy(gate, '[ "$KEY_PREFIX" = first/ ]'), MATCH_KEY=r"input\.txt$")
    try:
        (bucket / "first" / "input.txt").write_text("1")
        wait_until(Path(f"{gate}.in").exists, 20, "the first round to be running")
        (bucket / "second").mkdir()
        (bucket / "second" / "input.txt").write_text("2")
        gate.touch()
        wait_until(lambda: (bucket / "second" / "output.txt").exists(), 20, "the late file's output")
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert (bucket / "first" / "output.txt").read_text() == "1"


def test_sigterm_while_a_watched_round_runs_ends_the_handler_and_exits_1(tmp_path):
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    started = tmp_path / "started"
    process = watch(bucket, tmp_path / "log", f"echo $$ > {started}; exec sleep 300")
    try:
        (bucket / "input.txt").write_text("x")
        wait_until(started.exists, 20, "the handler to start")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert out.splitlines()[-1].split() == ["handler", "0", "0", "1", "0"]
    assert not Path(f"/proc/{int(started.read_text())}").exists()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue
    return found


@contextlib.contextmanager
def as_pid_1(tmp_path: Path, *args: str, env: dict = NO_AWS) -> Iterator[tuple[subprocess.Popen, int]]:
    """The bridge as PID 1 of a PID namespace, logging to tmp_path/log: (unshare's process, PID 1)."""
    probe = subprocess.run([*CONTAINER, "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here: {probe.stderr.strip()}")
    with open(tmp_path / "log", "wb") as log:
        container = subprocess.Popen([*CONTAINER, *BRIDGE, "local", *args], env=env, stdout=log, stderr=log)
    try:
        (pid_1,) = wait_until(lambda: children(container.pid), 30, "PID 1 of the namespace")
        yield container, pid_1
    finally:
        if container.poll() is None:
            container.kill()


def test_as_pid_1_of_a_container_orphans_are_reaped_and_strays_ended(tmp_path):
    bucket = bucket_with_input(tmp_path)
    # A zombie re-parented to PID 1 (its parent exits without reaping it), and a stray in its own session.
    handler = 'sh -c "sleep 0.1 & exec sleep 0.5" & setsid sleep 300 & sleep 1; touch "$ROOT_FOLDER/out.txt"'
    with as_pid_1(tmp_path, "--bucket-dir", str(bucket), "--all", "--watch", "--", "/bin/sh", "-c", handler) as (
        container,
        pid_1,
    ):
        wait_until(lambda: (bucket / "out.txt").exists(), 30, "the round to finish")
        wait_until(lambda: children(pid_1) == [], 30, "no child left under PID 1: strays ended, zombies reaped")
        os.kill(pid_1, signal.SIGTERM)
        assert container.wait(20) == 0, (tmp_path / "log").read_text()


def emf_problems(record: dict) -> list[str]:
    """What the EMF specification requires that a JSON Schema cannot say: every name a record's
    directives use is a member of the record, dimensions strings and metrics numbers."""
    import jsonschema

    schema = json.loads((ROOT / "tests" / "data" / "emf_schema.json").read_text())
    problems = [error.message for error in jsonschema.Draft202012Validator(schema).iter_errors(record)]
    for directive in record.get("_aws", {}).get("CloudWatchMetrics", []):
        for name in (name for dimensions in directive["Dimensions"] for name in dimensions):
            if not isinstance(record.get(name), str) or not 0 < len(record[name]) <= 1024:
                problems.append(f"dimension {name!r} is not a string member")
        for metric in directive["Metrics"]:
            value = record.get(metric["Name"])
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                problems.append(f"metric {metric['Name']!r} is not a number member")
    return problems


def test_with_metrics_each_group_summary_is_an_embedded_metric_format_record(tmp_path):
    bucket = tmp_path / "bucket"
    for folder in ("ok", "bad", "skip"):
        (bucket / folder).mkdir(parents=True)
        (bucket / folder / "input.txt").write_text(folder)
    handler = 'test "$KEY_PREFIX" != bad/ && cp "$ROOT_FOLDER/input.txt" "$ROOT_FOLDER/copy.bin"'
    settings = {"AWS_LAMBDA_LOG_FORMAT": "JSON", "METRICS_NAMESPACE": "Pipelines/Test", "MATCH_KEY": r"input\.txt$"}
    settings.update(
        AWS_LAMBDA_FUNCTION_NAME="wordcount-map", EXECUTION_FILTER_EXPR='all(.Key | startswith("skip") | not)'
    )
    result = local("--bucket-dir", str(bucket), "--all", "--", "/bin/sh", "-c", handler, **settings)
    records = {line["prefix"]: line for line in map(json.loads, result.stderr.splitlines()) if "outcome" in line}
    assert sorted(records) == ["bad/", "ok/", "skip/"]
    for record in records.values():
        assert emf_problems(record) == [], record
        (directive,) = record["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "Pipelines/Test" and directive["Dimensions"] == [["function"]]
        assert record["function"] == "wordcount-map"
    assert (
        records["ok/"]["groups_succeeded"],
        records["bad/"]["groups_failed"],
        records["skip/"]["groups_skipped"],
    ) == (1, 1, 1)
    assert records["ok/"]["uploaded_bytes"] == 2 and records["ok/"]["pulled_files"] == 1
    metrics = {m["Name"] for m in records["skip/"]["_aws"]["CloudWatchMetrics"][0]["Metrics"]}
    assert "handler_seconds" not in metrics and "handler_seconds" in str(records["ok/"]["_aws"])


def test_sigterm_stops_a_local_run_before_its_next_group_and_exits_1(tmp_path):
    bucket = tmp_path / "bucket"
    for n in range(20):
        (bucket / f"f{n:02d}").mkdir(parents=True)
        (bucket / f"f{n:02d}" / "input.txt").write_text("x")
    ledger = tmp_path / "runs"
    command = [*BRIDGE, "local", "--bucket-dir", str(bucket), "--all", "--"]
    handler = f'echo "$KEY_PREFIX" >> {ledger}; exec sleep 300'
    with open(tmp_path / "log", "wb") as log:
        process = subprocess.Popen([*command, "/bin/sh", "-c", handler], env=NO_AWS, stdout=subprocess.PIPE, stderr=log)
    try:
        wait_until(ledger.exists, 20, "the first handler to start")
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    assert ledger.read_text().split() == ["f00/"], "no group starts once stopping"
    assert out.decode().splitlines()[-1].split() == ["handler", "0", "0", "20", "0"]


def test_watch_processes_again_a_file_saved_while_its_round_ran(tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "d").mkdir(parents=True)
    gate = tmp_path / "gate"
    process = watch(bucket, tmp_path / "log", held_copy(gate, f"[ ! -e {gate}.used ]"), MATCH_KEY=r"input\.txt$")
    try:
        (bucket / "d" / "input.txt").write_text("version 1")
        wait_until(Path(f"{gate}.in").exists, 20, "the first round to be running")
        (bucket / "d" / "input.txt").write_text("version 2")
        gate.touch()
        wait_until(lambda: (bucket / "d" / "output.txt").read_text() == "version 2", 20, "the second save's output")
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()


def test_local_never_reads_or_writes_through_a_link_in_the_bucket_folder(tmp_path):
    bucket, outside = tmp_path / "bucket", tmp_path / "outside"
    (bucket / "p").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (bucket / "p" / "input.txt").write_text("x")
    os.symlink(outside, bucket / "p" / "sub")
    os.symlink(outside, bucket / "lnk")
    write = ["/bin/sh", "-c", 'mkdir -p "$ROOT_FOLDER/sub" && echo out > "$ROOT_FOLDER/sub/x.txt"']
    through_link = local("--bucket-dir", str(bucket), "lnk/secret.txt", "--", *write)
    assert through_link.returncode == 2 and "no such key" in through_link.stderr
    result = local("--bucket-dir", str(bucket), "p/input.txt", "--", *write)
    assert result.returncode == 1, "the output could only be written through the link: the group fails"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


def test_a_bridge_whose_stderr_nobody_reads_still_ends_at_its_deadline_after_a_signal(tmp_path):
    """The main thread may block writing its log line; the kernel's alarm, armed first, ends the process."""
    bucket = bucket_with_input(tmp_path)
    started = tmp_path / "started"
    command = [
        *BRIDGE,
        "local",
        "--bucket-dir",
        str(bucket),
        "--all",
        "--",
        "/bin/sh",
        "-c",
        f"touch {started}; yes >&2",
    ]
    process = subprocess.Popen(command, env=NO_AWS, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(started.exists, 20, "the handler to start filling stderr")
        began = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == -signal.SIGALRM
        assert time.monotonic() - began < stopped_within()
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_as_pid_1_a_signal_during_start_up_is_not_lost(tmp_path):
    bucket, temporary = tmp_path / "bucket", tmp_path / "tmp"
    bucket.mkdir()
    for n in range(3000):  # leftovers of killed runs: the start-up sweep takes a while
        (temporary / f"{bridge.WORK_PREFIX}{n}" / "root").mkdir(parents=True)
    env = {**NO_AWS, "TMPDIR": str(temporary)}
    with as_pid_1(tmp_path, "--bucket-dir", str(bucket), "--watch", "--", "true", env=env) as (container, pid_1):
        wait_until(lambda: "removing leftover" in (tmp_path / "log").read_text(), 20, "the start-up sweep")
        os.kill(pid_1, signal.SIGTERM)
        assert container.wait(30) == 0, "PID 1 ignores a signal it has no handler for: installed before start-up"


def test_local_mode_runs_on_a_python_built_without_ssl(tmp_path):
    """ssl is imported where HTTPS needs it, so a Python built without it still runs a pipeline locally."""
    bucket = bucket_with_input(tmp_path)
    no_ssl = "import runpy, sys; sys.modules['ssl'] = None; sys.argv[:] = sys.argv[1:]; "
    no_ssl += "runpy.run_path(sys.argv[0], run_name='__main__')"
    handler = 'cp "$ROOT_FOLDER/input.txt" "$ROOT_FOLDER/out.txt"'
    command = [
        BRIDGE[0],
        "-c",
        no_ssl,
        BRIDGE[1],
        "local",
        "--bucket-dir",
        str(bucket),
        "input.txt",
        "--",
        "/bin/sh",
        "-c",
        handler,
    ]
    result = subprocess.run(command, env=NO_AWS, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (bucket / "out.txt").read_text() == "x"


def test_links_in_the_bucket_folder_are_not_objects(tmp_path):
    bucket, outside = tmp_path / "bucket", tmp_path / "outside"
    (bucket / "d").mkdir(parents=True)
    outside.mkdir()
    (outside / "elsewhere.txt").write_text("x")
    (bucket / "d" / "real.txt").write_text("real")
    os.symlink(outside / "elsewhere.txt", bucket / "d" / "file-link.txt")
    os.symlink(outside, bucket / "d" / "folder-link")
    listing = ["/bin/sh", "-c", 'cd "$ROOT_FOLDER" && find . -type f ! -name listing | sort > listing']
    keys_only = 'map(.Key) == ["d/real.txt"]'
    result = local("--bucket-dir", str(bucket), "--all", "--", *listing, EXECUTION_FILTER_EXPR=keys_only)
    assert result.returncode == 0, result.stderr
    assert (bucket / "d" / "listing").read_text() == "./real.txt\n", "the filter let it run: the links were not listed"


@pytest.mark.parametrize("model, runs", [("folder", 1), ("object", 3)])
def test_local_mode_runs_a_folder_or_each_object_as_group_by_says(model, runs, tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "flat").mkdir(parents=True)
    for name in ("a", "b", "c"):
        (bucket / "flat" / f"{name}.csv").write_text(name)
    handler = 'cd "$ROOT_FOLDER" && for f in *.csv; do cp "$f" "$f.out"; done; cat "$TRIGGERS_FILE" > "run-$$.json"'
    result = local(
        "--bucket-dir", str(bucket), "--all", "--target-dir", str(tmp_path / "out"), "--", "/bin/sh", "-c", handler,
        GROUP_BY=model, MATCH_KEY=r"\.csv$",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2].split()[1] == str(runs)
    out = tmp_path / "out" / "flat"
    assert sorted(p.name for p in out.glob("*.out")) == ["a.csv.out", "b.csv.out", "c.csv.out"]
    triggers = sorted(json.loads(p.read_text()) for p in out.glob("run-*.json"))
    assert triggers == ([["a.csv", "b.csv", "c.csv"]] if model == "folder" else [["a.csv"], ["b.csv"], ["c.csv"]])


def test_as_pid_1_only_the_handlers_own_leftovers_are_ended_never_an_orphan_of_anyone_else(tmp_path):
    """A `docker exec` session's background job is re-parented to PID 1 when its shell exits: it never
    belonged to a handler, and must outlive the handler's end (reaped when it exits, never killed)."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    handler = 'setsid sleep 300 & sleep 0.2; touch "$ROOT_FOLDER/out.txt"'  # leaves a stray in a session of its own
    with as_pid_1(tmp_path, "--bucket-dir", str(bucket), "--all", "--watch", "--", "/bin/sh", "-c", handler) as (
        container,
        pid_1,
    ):
        wait_until(lambda: "watching" in (tmp_path / "log").read_text(), 20, "the bridge to watch")
        enter = ["nsenter", "--target", str(pid_1), "--pid", "--mount", "/bin/sh", "-c", "setsid sleep 300 &"]
        subprocess.run(enter, check=True, timeout=10)  # its shell exits: the job is PID 1's now
        (foreign,) = wait_until(lambda: children(pid_1), 30, "the exec session's job re-parented to PID 1")
        (bucket / "input.txt").write_text("x")
        wait_until(lambda: (bucket / "out.txt").exists(), 30, "the round to run")
        wait_until(lambda: children(pid_1) == [foreign], 30, "the handler's stray ended, the other left alone")
        os.kill(foreign, 0)  # still running
        os.kill(foreign, signal.SIGKILL)
        wait_until(lambda: children(pid_1) == [], 30, "the foreign job reaped once it exits")
        os.kill(pid_1, signal.SIGTERM)
        assert container.wait(20) == 0, (tmp_path / "log").read_text()


def test_as_pid_1_a_handlers_exit_status_is_its_own_while_orphans_exit_all_around(tmp_path):
    """As PID 1 the bridge reaps the orphans of anyone's that exit; a handler starting and ending meanwhile
    must never be reaped that way (its status would read 0: a failure counted as a success)."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    for n in range(300):
        (bucket / f"k{n}.txt").write_text("x")
    handler = "(sleep 0.001 &); exit 3"  # an orphan of its own each time, and a failure
    args = ("--bucket-dir", str(bucket), "--all", "--watch", "--", "/bin/sh", "-c", handler)
    with as_pid_1(tmp_path, *args, env={**NO_AWS, "GROUP_BY": "object"}) as (container, pid_1):
        crowd = (
            "for i in $(seq 400); do sleep 300 & done; while :; do (sleep 0.001 &); done"  # slow /proc, more orphans
        )
        enter = ["nsenter", "--target", str(pid_1), "--pid", "--mount", "/bin/sh", "-c", crowd]
        with subprocess.Popen(enter, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as crowding:
            try:
                wait_until(lambda: "watching" in (tmp_path / "log").read_text(), 120, "every group to run")
            finally:
                crowding.kill()
        log_text = (tmp_path / "log").read_text()
        assert log_text.count(" failed: handler exited with status 3") == 300
        assert " succeeded" not in log_text
        os.kill(pid_1, signal.SIGTERM)
        assert container.wait(30) == 1, "a flood of SIGCHLD never hides the SIGTERM; exit 1: groups failed"


def test_signals_ignored_or_blocked_where_the_bridge_starts_neither_hide_a_status_nor_reach_the_handler(tmp_path):
    """A parent that ignores SIGCHLD would have handlers reaped before their status is read; nohup
    ignores SIGHUP; a mask is inherited: the handler starts with every signal at its default, unblocked."""
    bucket = bucket_with_input(tmp_path)

    def as_nohup_and_worse():
        for signum in (signal.SIGCHLD, signal.SIGHUP, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1, signal.SIGINT])

    def run(*handler):
        command = [*BRIDGE, "local", "--bucket-dir", str(bucket), "input.txt", "--", *handler]
        return subprocess.run(
            command, env=NO_AWS, preexec_fn=as_nohup_and_worse, capture_output=True, text=True, timeout=60
        )

    failing = run("/bin/sh", "-c", "exit 3")
    assert failing.returncode == 1 and "exit_status=3" in failing.stderr, failing.stderr
    status = run("grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status")
    assert status.returncode == 0, status.stderr
    assert sorted(status.stdout.splitlines()[:2]) == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"]


def test_a_bridge_killed_with_sigkill_takes_its_handler_with_it(tmp_path):
    """The OOM killer or `docker kill`: the handler gets SIGKILL too (PR_SET_PDEATHSIG), rather than run on
    while its folder is swept and its message is delivered again."""
    bucket = bucket_with_input(tmp_path)
    pidfile = tmp_path / "handler.pid"
    command = [
        *BRIDGE,
        "local",
        "--bucket-dir",
        str(bucket),
        "input.txt",
        "--",
        "/bin/sh",
        "-c",
        f"echo $$ > {pidfile}; exec sleep 300",
    ]
    bridge_process = subprocess.Popen(command, env=NO_AWS, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        handler = int(wait_until(lambda: pidfile.read_text().strip(), 20, "the handler to start"))
        bridge_process.kill()
        bridge_process.wait(10)
        wait_until(lambda: not alive(handler), 30, "the handler to die with the bridge")
    finally:
        if bridge_process.poll() is None:
            bridge_process.kill()


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for a parent to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False
