"""The zipapp's bundle logic: jq build selection, and unpacking once, safely."""

import os
import sys
import tempfile
import zipfile

import pytest

import bridge

BUILDS = [
    f"cp3{minor}-{libc}-{arch}"
    for minor in range(9, 15)
    for libc in ("manylinux_2_26", "musllinux_1_2")
    for arch in ("x86_64", "aarch64")
]


@pytest.mark.parametrize(
    "python, machine, glibc, expected",
    [
        ((3, 11), "x86_64", (2, 36), "cp311-manylinux_2_26-x86_64"),
        ((3, 11), "aarch64", (2, 26), "cp311-manylinux_2_26-aarch64"),
        ((3, 9), "x86_64", None, "cp39-musllinux_1_2-x86_64"),
        ((3, 13), "aarch64", None, "cp313-musllinux_1_2-aarch64"),
        ((3, 12), "x86_64", (2, 17), None),
        ((3, 8), "x86_64", (2, 36), None),
        ((3, 15), "x86_64", (2, 36), None),
        ((3, 11), "riscv64", (2, 36), None),
    ],
)
def test_the_jq_build_matches_interpreter_machine_and_libc(python, machine, glibc, expected):
    assert bridge.select_jq_build(BUILDS, python, machine, glibc) == expected


def test_this_machine_reports_its_glibc():
    assert bridge.running_glibc() >= (2, 17)


def text(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read()


def make_bundle(tmp_path):
    archive = tmp_path / "app.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("lib/pkg/__init__.py", "VALUE = 1\n")
        z.writestr("lib/pkg/data/model.json", "{}")
        z.writestr("jq/cp311-manylinux_2_26-x86_64/jq.so", "x")
    return bridge.Bundle(str(archive), "abc123")


def test_unpacking_writes_the_files_and_a_completion_marker(tmp_path):
    bundle = make_bundle(tmp_path)
    dest = bundle.unpack("lib/", str(tmp_path / "cache" / "lib"))
    assert text(dest, "pkg", "__init__.py") == "VALUE = 1\n"
    assert text(dest, "pkg", "data", "model.json") == "{}"
    assert os.path.isfile(os.path.join(dest, ".complete"))
    assert bundle.jq_builds() == ["cp311-manylinux_2_26-x86_64"]


def test_a_folder_without_its_marker_and_leftovers_are_replaced(tmp_path):
    bundle = make_bundle(tmp_path)
    cache = tmp_path / "cache"
    (cache / "lib" / "pkg").mkdir(parents=True)
    (cache / "lib" / "pkg" / "__init__.py").write_text("CORRUPT = True\n")
    (cache / ".lib.unpacking-dead").mkdir()
    dest = bundle.unpack("lib/", str(cache / "lib"))
    assert text(dest, "pkg", "__init__.py") == "VALUE = 1\n"
    assert sorted(os.listdir(cache)) == [".lib.lock", "lib"]


def test_a_complete_folder_is_reused_untouched(tmp_path):
    bundle = make_bundle(tmp_path)
    dest = bundle.unpack("lib/", str(tmp_path / "cache" / "lib"))
    marker = os.path.join(dest, "pkg", "mine")
    with open(marker, "w"):
        pass
    assert bundle.unpack("lib/", dest) == dest
    assert os.path.exists(marker)


def test_a_world_writable_cache_folder_is_not_trusted(tmp_path):
    bundle = make_bundle(tmp_path)
    dest = bundle.unpack("lib/", str(tmp_path / "cache" / "lib"))
    os.chmod(dest, 0o777)
    assert not bridge._usable(dest)
    bundle.unpack("lib/", dest)
    assert bridge._usable(dest)


@pytest.fixture
def isolated_imports(monkeypatch):
    """Activating a bundle changes sys.path and sys.meta_path: give them back afterwards."""
    monkeypatch.setattr(sys, "path", sys.path[:])
    monkeypatch.setattr(sys, "meta_path", sys.meta_path[:])


def test_with_a_umask_of_0_no_cache_folder_or_lock_is_writable_by_others(tmp_path, isolated_imports):
    bundle = make_bundle(tmp_path)
    previous = os.umask(0)
    try:
        files = bridge.activate_bundle(bundle, str(tmp_path / "new" / "cache"))
    finally:
        os.umask(previous)
    created = [tmp_path / "new", tmp_path / "new" / "cache", *(tmp_path / "new").rglob("*")]
    assert files.startswith(str(tmp_path / "new" / "cache" / "abc123"))
    for path in created:
        if not path.is_symlink():
            assert path.stat().st_mode & 0o022 == 0, f"{path} is writable by others"


def test_a_cache_that_others_can_write_gives_way_to_a_private_folder_with_a_warning(
    tmp_path, monkeypatch, capsys, isolated_imports
):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    files = bridge.activate_bundle(make_bundle(tmp_path), str(shared))
    assert files == str(tmp_path / "tmp" / f"s3eb-cache-{os.geteuid()}" / "abc123" / "files")
    assert "S3_EVENT_BRIDGE_CACHE" in capsys.readouterr().err
    assert os.listdir(shared) == []


def test_a_lock_file_of_another_user_is_not_used(tmp_path):
    bundle = make_bundle(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".lib.lock").touch()
    os.chown(cache / ".lib.lock", 65534, 65534)
    with pytest.raises(OSError, match="belongs to another user"):
        bundle.unpack("lib/", str(cache / "lib"))


def test_on_musl_confstr_raises_and_the_musl_jq_build_is_chosen(monkeypatch):
    def musl_confstr(name):
        raise OSError(22, "Invalid argument")  # what CPython on musl raises for CS_GNU_LIBC_VERSION

    monkeypatch.setattr(os, "confstr", musl_confstr)
    assert bridge.running_glibc() is None
    assert bridge.select_jq_build(BUILDS, (3, 11), "x86_64", bridge.running_glibc()) == "cp311-musllinux_1_2-x86_64"


def test_a_cache_folder_of_another_user_is_not_trusted_and_is_unpacked_again(tmp_path):
    bundle = make_bundle(tmp_path)
    dest = bundle.unpack("lib/", str(tmp_path / "cache" / "lib"))
    os.chown(dest, 65534, 65534)
    assert not bridge._usable(dest)
    bundle.unpack("lib/", dest)
    assert bridge._usable(dest) and os.stat(dest).st_uid == os.geteuid()
