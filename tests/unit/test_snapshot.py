"""Snapshots: which regular files are outputs, and which of them changed."""

import hashlib
import os

import pytest

import bridge


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def pulled(**files):
    return {name.replace("__", "/"): (len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()}


def test_regular_files_are_listed_by_posix_relative_path_with_their_size(tmp_path):
    write(tmp_path / "a.txt", b"alpha")
    write(tmp_path / "sub" / "deeper" / "b.bin", b"\0" * 3_000_000)
    found = bridge.regular_files(str(tmp_path))
    assert {rel: size for rel, (_, size) in found.items()} == {"a.txt": 5, "sub/deeper/b.bin": 3_000_000}


def test_links_and_special_files_are_never_outputs(tmp_path, caplog):
    outside = tmp_path / "outside"
    write(outside / "secret.txt", b"secret")
    root = tmp_path / "root"
    write(root / "real.txt", b"real")
    os.symlink(outside / "secret.txt", root / "file-link")
    os.symlink(outside, root / "dir-link")
    os.mkfifo(root / "pipe")
    assert set(bridge.regular_files(str(root))) == {"real.txt"}
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("file-link", "dir-link", "pipe"):
        assert name in warned


def test_new_and_modified_files_changed_and_untouched_ones_did_not(tmp_path):
    write(tmp_path / "same", b"same")
    write(tmp_path / "same-size", b"XXXX")
    write(tmp_path / "grown", b"grown!")
    write(tmp_path / "new" / "x", b"new")
    before = pulled(same=b"same", **{"same-size": b"abcd"}, grown=b"grown", deleted=b"gone")
    assert bridge.changed_files(str(tmp_path), before) == ["grown", "new/x", "same-size"]


def test_a_file_rewritten_with_the_same_bytes_is_not_uploaded(tmp_path):
    write(tmp_path / "a", b"same")
    assert bridge.changed_files(str(tmp_path), pulled(a=b"same")) == []


def test_only_pulled_files_that_kept_their_size_are_read(tmp_path, monkeypatch):
    write(tmp_path / "grown", b"grown!")
    write(tmp_path / "new", b"new")
    monkeypatch.setattr(bridge, "file_digest", lambda path: pytest.fail(f"{path} was read"))
    assert bridge.changed_files(str(tmp_path), pulled(grown=b"grown")) == ["grown", "new"]


def test_writing_while_hashing_gives_the_file_digest(tmp_path):
    chunks = [b"a" * 1000, b"b" * 10, b""]
    digest = bridge.write_hashing(iter(chunks), str(tmp_path / "f"))
    assert digest == bridge.file_digest(str(tmp_path / "f")) == hashlib.sha256(b"".join(chunks)).hexdigest()
