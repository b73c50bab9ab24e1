"""`bootstrap local`: a folder is the bucket, no AWS anywhere."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]
BRIDGE = [sys.executable, str(ROOT / "bridge.py")]
NO_AWS = {"PATH": os.environ["PATH"], "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent"}


def local(*args, cwd=ROOT, **settings):
    command = [*BRIDGE, "local", *args]
    return subprocess.run(command, env={**NO_AWS, **settings}, capture_output=True, text=True, timeout=120, cwd=cwd)


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
