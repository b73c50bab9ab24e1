"""Work folders: walks and removals of any tree, and a start-up sweep that never crashes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import bridge
from helpers import ROOT, wait_until

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def deep_tree(top: Path, depth: int) -> Path:
    """`depth` nested folders under top, made relative to each other: deeper than PATH_MAX if asked."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("bottom.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as bottom:
            bottom.write("deep")
    finally:
        os.close(fd)
    return top


def run_as_nobody(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*NOBODY, sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); {code}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def shared_tmp():
    """A folder every user can reach, like /tmp (pytest's own are private to root)."""
    folder = tempfile.mkdtemp(dir="/tmp", prefix="s3eb-test-shared-")
    os.chmod(folder, 0o1777)
    yield Path(folder)
    bridge.remove_tree(folder)


def test_walks_and_removals_do_not_depend_on_the_recursion_limit_or_path_max(tmp_path):
    top = deep_tree(tmp_path / "top", 2500)  # 5,000 characters of path: beyond PATH_MAX (4,096)
    sys.setrecursionlimit(100)
    try:
        entries = [(path, name) for _, name, path, _ in bridge.walk_tree(str(top))]
        bridge.remove_tree(str(top))
    finally:
        sys.setrecursionlimit(1000)
    assert entries[0] == ("d/" * 2500 + "bottom.txt", "bottom.txt"), "deepest first"
    assert len(entries) == 2501 and entries[-1] == ("d", "d")
    assert not top.exists()


def test_removal_opens_up_folders_left_at_mode_000_and_never_follows_links(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    top = tmp_path / "work"
    (top / "a" / "b").mkdir(parents=True)
    (top / "a" / "b" / "f.txt").write_text("x")
    os.symlink(outside, top / "a" / "link-to-outside")
    os.symlink(outside / "keep.txt", top / "file-link")
    os.mkfifo(top / "pipe")
    os.chmod(top / "a" / "b", 0)
    os.chmod(top / "a", 0)
    bridge.remove_tree(str(top))
    assert not top.exists()
    assert (outside / "keep.txt").read_text() == "keep"


def test_a_work_folder_replaced_by_a_link_is_removed_as_a_link(tmp_path):
    outside = tmp_path / "etc-like"
    outside.mkdir()
    (outside / "passwd").write_text("root:x:0:0")
    link = tmp_path / "s3eb-work-replaced"
    os.symlink(outside, link)
    bridge.remove_tree(str(link))
    assert not os.path.lexists(link)
    assert (outside / "passwd").read_text() == "root:x:0:0"


def test_a_walk_repairs_permissions_of_what_the_bridge_owns(shared_tmp):
    top = shared_tmp / "root"
    code = (
        f"import os, bridge; top = {str(top)!r}\n"
        "os.makedirs(top + '/out/deep'); open(top + '/out/deep/b.txt', 'w').write('b')\n"
        "os.chmod(top + '/out/deep/b.txt', 0); os.chmod(top + '/out/deep', 0o300); os.chmod(top + '/out', 0)\n"
        "found = bridge.regular_files(top)\n"
        "print(sorted(found), open(found['out/deep/b.txt'][0]).read())\n"
    )
    result = run_as_nobody(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["['out/deep/b.txt']", "b"]


def test_an_error_reading_the_work_folder_fails_the_group_naming_the_path(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a")
    real_listdir = os.listdir

    def refuse_out(fd):
        if isinstance(fd, int) and os.path.samestat(os.fstat(fd), os.stat(tmp_path / "out")):
            raise PermissionError(13, "Permission denied")
        return real_listdir(fd)

    monkeypatch.setattr(os, "listdir", refuse_out)
    with pytest.raises(bridge.GroupError, match=f"cannot read the work folder.*{tmp_path}/out"):
        bridge.changed_files(str(tmp_path), {})


def test_an_entry_that_vanishes_mid_walk_is_skipped(tmp_path, monkeypatch):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda fd: [*real_listdir(fd), "renamed-away.tmp"])
    assert sorted(bridge.regular_files(str(tmp_path))) == ["a.txt", "b.txt"]


def test_the_sweep_removes_stale_folders_whatever_they_hold_and_keeps_live_ones(tmp_path):
    stale = deep_tree(tmp_path / (bridge.WORK_PREFIX + "stale"), 1500)
    os.chmod(stale / "d", 0)
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, tmp_path / (bridge.WORK_PREFIX + "a-link"))
    unrelated = tmp_path / "other"
    unrelated.mkdir()
    code = f"import bridge, sys; print(bridge.make_work_folder({str(tmp_path)!r}).path, flush=True); sys.stdin.read()"
    live = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        live_path = live.stdout.readline().strip()
        bridge.remove_stale_work_folders(str(tmp_path))
        assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(live_path), "outside", "other"])
    finally:
        live.communicate("")


def test_the_sweep_skips_folders_it_cannot_open_or_that_went_and_never_raises(shared_tmp, monkeypatch, caplog):
    others = shared_tmp / (bridge.WORK_PREFIX + "another-user")
    others.mkdir(mode=0o700)
    mine = shared_tmp / (bridge.WORK_PREFIX + "mine")
    mine.mkdir()
    (mine / "left.txt").write_text("x")
    for path in (mine, mine / "left.txt"):
        os.chown(path, 65534, 65534)
    result = run_as_nobody(
        "import logging, bridge; logging.basicConfig(level=logging.INFO); "
        f"bridge.log.propagate = True; bridge.remove_stale_work_folders({str(shared_tmp)!r})"
    )
    assert result.returncode == 0, result.stderr
    assert others.exists() and not mine.exists()
    assert f"leaving {others}" in result.stderr and "Permission denied" in result.stderr
    real_listdir = os.listdir
    monkeypatch.setattr(os, "listdir", lambda path: [*real_listdir(path), bridge.WORK_PREFIX + "went"])
    caplog.set_level(logging.INFO, logger=bridge.log.name)
    bridge.remove_stale_work_folders(str(shared_tmp))
    assert "went" in caplog.text and "No such file" in caplog.text


def test_a_sweep_running_alongside_never_removes_a_new_folder(tmp_path):
    """Creating and locking is one step to a sweeper: a new folder is never swept from under its maker."""
    done, parent = str(tmp_path / "done"), str(tmp_path)
    sweep = f"import bridge, os\nwhile not os.path.exists({done!r}): bridge.remove_stale_work_folders({parent!r})"
    sweeper = subprocess.Popen([sys.executable, "-c", sweep], cwd=ROOT)
    try:
        wait_until(lambda: sweeper.poll() is None, 30, "the sweeper to start")
        for _ in range(2000):
            work = bridge.make_work_folder(str(tmp_path))
            (Path(work.root) / "out").mkdir()
            assert (Path(work.root) / "out").is_dir()
            work.remove()
    finally:
        (tmp_path / "done").touch()
        assert sweeper.wait(30) == 0


def test_a_work_folder_that_cannot_be_made_fails_its_group_not_the_process(tmp_path, monkeypatch, caplog):
    full = tmp_path / "no-inodes"
    full.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=1", "tmpfs", str(full)])
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        monkeypatch.setattr(tempfile, "tempdir", str(full))
        config = bridge.Config.from_env({"HANDLER_COMMAND": "true"})
        store = bridge.LocalStore({"b": str(tmp_path)})
        report = bridge.Bridge(config, store, {}).process(bridge.Group("b", ""))
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert report.outcome == "failed" and "No space left on device" in report.error


def test_as_root_the_sweep_leaves_another_users_folder_to_that_user(tmp_path, caplog):
    theirs = tmp_path / (bridge.WORK_PREFIX + "theirs")
    (theirs / "x").mkdir(parents=True)
    for path in (theirs, theirs / "x"):
        os.chown(path, 65534, 65534)
    caplog.set_level(logging.INFO, logger=bridge.log.name)
    bridge.remove_stale_work_folders(str(tmp_path))
    assert (theirs / "x").is_dir() and "another user's" in caplog.text


def test_as_root_nothing_is_opened_up_so_a_link_swapped_in_mid_walk_changes_nothing(tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.write_text("root's")
    os.chmod(victim, 0o600)
    top = tmp_path / "work"
    top.mkdir()
    (top / "planted").write_text("x")
    os.chmod(top / "planted", 0o4000)
    real_stat = os.stat

    def swap_after_stat(name, *args, **kwargs):
        info = real_stat(name, *args, **kwargs)
        if name == "planted" and kwargs.get("follow_symlinks") is False:  # the walk's lstat: swap the entry now
            os.unlink(top / "planted")
            os.symlink(victim, top / "planted")
        return info

    monkeypatch.setattr(os, "stat", swap_after_stat)
    bridge.remove_tree(str(top))
    assert victim.stat().st_mode & 0o7777 == 0o600 and victim.read_text() == "root's"


def test_a_stray_this_user_may_not_signal_is_spared_not_waited_for(monkeypatch):
    stray = subprocess.Popen(["sleep", "30"], start_new_session=True)
    real_kill = os.kill

    def refuse(pid, signum):
        if pid == stray.pid:
            raise PermissionError(1, "Operation not permitted")
        return real_kill(pid, signum)

    monkeypatch.setattr(os, "kill", refuse)
    try:
        bridge.end_strays(stray.pid, None)
        assert stray.poll() is None, "spared, and end_strays returned"
    finally:
        real_kill(stray.pid, signal.SIGKILL)
        stray.wait()
