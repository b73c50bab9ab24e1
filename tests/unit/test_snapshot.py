"""Snapshots hash regular files only; the diff is what gets uploaded."""

import hashlib
import os

import bridge


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_snapshot_hashes_regular_files_by_posix_relative_path(tmp_path):
    write(tmp_path / "a.txt", b"alpha")
    write(tmp_path / "sub" / "deeper" / "b.bin", b"\0" * 3_000_000)
    digests = bridge.snapshot(str(tmp_path))
    assert digests == {
        "a.txt": hashlib.sha256(b"alpha").hexdigest(),
        "sub/deeper/b.bin": hashlib.sha256(b"\0" * 3_000_000).hexdigest(),
    }


def test_snapshot_never_follows_links_or_reads_special_files(tmp_path, caplog):
    outside = tmp_path / "outside"
    write(outside / "secret.txt", b"secret")
    root = tmp_path / "root"
    write(root / "real.txt", b"real")
    os.symlink(outside / "secret.txt", root / "file-link")
    os.symlink(outside, root / "dir-link")
    os.mkfifo(root / "pipe")
    assert set(bridge.snapshot(str(root))) == {"real.txt"}
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("file-link", "dir-link", "pipe"):
        assert name in warned


def test_changed_files_are_the_new_and_the_modified_ones():
    before = {"same": "1", "modified": "2", "deleted": "3"}
    after = {"same": "1", "modified": "9", "new/x": "4"}
    assert bridge.changed_files(before, after) == ["modified", "new/x"]


def test_a_file_rewritten_with_the_same_bytes_is_not_uploaded(tmp_path):
    write(tmp_path / "a", b"same")
    before = bridge.snapshot(str(tmp_path))
    write(tmp_path / "a", b"same")
    assert bridge.changed_files(before, bridge.snapshot(str(tmp_path))) == []
