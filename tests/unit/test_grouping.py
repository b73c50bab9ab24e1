"""Grouping by bucket and prefix, PULL_PARENT_DIRS, and key -> path safety."""

import pytest

import bridge


@pytest.mark.parametrize(
    "key, parents, prefix",
    [
        ("a/b/c/file.txt", 0, "a/b/c/"),
        ("a/b/c/file.txt", 1, "a/b/"),
        ("a/b/c/file.txt", 2, "a/"),
        ("a/b/c/file.txt", 3, ""),
        ("a/b/c/file.txt", 4, ""),
        ("a/b/c/file.txt", 99, ""),
        ("a/b/c/file.txt", -1, ""),
        ("file.txt", 0, ""),
        ("file.txt", 1, ""),
        ("dir/", 0, "dir/"),
        ("a//b.txt", 0, "a//"),
    ],
)
def test_pull_parent_dirs_picks_the_prefix(key, parents, prefix):
    assert bridge.key_prefix(key, parents) == prefix


def config(**env):
    return bridge.Config.from_env({"HANDLER_COMMAND": "true", **env})


def test_groups_join_messages_by_bucket_and_folder_and_remember_their_sources():
    messages = [
        bridge.Message("m1", (bridge.ObjectRef("b", "x/1.txt"), bridge.ObjectRef("b", "y/1.txt"))),
        bridge.Message("m2", (bridge.ObjectRef("b", "x/2.txt"),)),
        bridge.Message("m3", (bridge.ObjectRef("c", "x/1.txt"),)),
        bridge.Message("m4", (bridge.ObjectRef("b", "x/3.txt"), bridge.ObjectRef("b", "x/4.txt"))),
    ]
    groups = bridge.group_messages(messages, config())
    assert groups == [
        bridge.Group("b", "x/", ("m1", "m2", "m4"), ("x/1.txt", "x/2.txt", "x/3.txt", "x/4.txt")),
        bridge.Group("b", "y/", ("m1",), ("y/1.txt",)),
        bridge.Group("c", "x/", ("m3",), ("x/1.txt",)),
    ]


def test_match_key_is_an_unanchored_search_on_the_decoded_key():
    messages = [
        bridge.Message("m1", (bridge.ObjectRef("b", "in put/input.txt"), bridge.ObjectRef("b", "o/output.txt")))
    ]
    groups = bridge.group_messages(messages, config(MATCH_KEY=r"put/input\.txt$"))
    assert groups == [bridge.Group("b", "in put/", ("m1",), ("in put/input.txt",))]


def test_parent_dirs_merge_sibling_folders_into_one_group():
    messages = [
        bridge.Message("m1", (bridge.ObjectRef("b", "run/a/in.txt"),)),
        bridge.Message("m2", (bridge.ObjectRef("b", "run/b/in.txt"),)),
    ]
    assert bridge.group_messages(messages, config(PULL_PARENT_DIRS="1")) == [
        bridge.Group("b", "run/", ("m1", "m2"), ("run/a/in.txt", "run/b/in.txt"))
    ]


def test_group_by_object_makes_one_group_per_key_and_merges_events_for_the_same_key():
    messages = [
        bridge.Message("m1", (bridge.ObjectRef("b", "f/a.jpg"), bridge.ObjectRef("b", "f/b.jpg"))),
        bridge.Message("m2", (bridge.ObjectRef("b", "f/a.jpg"),)),
        bridge.Message("m3", (bridge.ObjectRef("b", "f/x/c.jpg"),)),
    ]
    assert bridge.group_messages(messages, config(GROUP_BY="object", PULL_PARENT_DIRS="1")) == [
        bridge.Group("b", "", ("m1", "m2"), ("f/a.jpg",), "f/a.jpg"),
        bridge.Group("b", "", ("m1",), ("f/b.jpg",), "f/b.jpg"),
        bridge.Group("b", "f/", ("m3",), ("f/x/c.jpg",), "f/x/c.jpg"),
    ]
    assert [str(g) for g in bridge.group_messages(messages, config(GROUP_BY="Object"))][:1] == ["s3://b/f/a.jpg"]


def test_a_batch_jobs_tasks_keep_their_arguments_and_never_join_an_events_group():
    task = bridge.Message("t1", (bridge.ObjectRef("b", "f/a.jpg"),), job='{"k": "v"}')
    event = bridge.Message("m1", (bridge.ObjectRef("b", "f/b.jpg"),))
    groups = bridge.group_messages([task, event], config())
    assert [(g.sources, g.job) for g in groups] == [(("t1",), '{"k": "v"}'), (("m1",), None)]


@pytest.mark.parametrize("value", ["files", "", "folders "])
def test_group_by_is_folder_or_object(value):
    if value.strip() in ("", "folder"):
        assert config(GROUP_BY=value).group_by == "folder"
    else:
        with pytest.raises(bridge.ConfigError, match="GROUP_BY"):
            config(GROUP_BY=value)


@pytest.mark.parametrize(
    "key, prefix, path",
    [
        ("p/file.txt", "p/", "file.txt"),
        ("p/sub/file.txt", "p/", "sub/file.txt"),
        ("p/sub/", "p/", "sub/"),
        ("p/é ü/%2B+.txt", "p/", "é ü/%2B+.txt"),
        ("p/", "p/", None),
        ("p/../x", "p/", None),
        ("p/a/../../x", "p/", None),
        ("p/..", "p/", None),
        ("p//abs", "p/", None),
        ("/abs", "", None),
        ("p/a//b", "p/", None),
        ("p/a/./b", "p/", None),
        ("p/./", "p/", None),
        ("p/a\0b", "p/", None),
        ("q/file.txt", "p/", None),
        ("..", "", None),
        ("...", "", "..."),
        ("a..b/c", "", "a..b/c"),
    ],
)
def test_key_to_path_refuses_anything_that_could_leave_the_folder(key, prefix, path):
    assert bridge.relative_path(key, prefix) == path


@pytest.mark.parametrize(
    "listing, refused",
    [
        (["a", "a/", "a/b", "ok"], ["a/", "a/b"]),
        (["a/", "a/b", "a/c/", "a/c/d"], []),
        (["a/b", "a"], ["a"]),
        (["a/b/", "a/b"], ["a/b"]),
        (["d/e/f", "d/e"], ["d/e"]),
        (["x" * 255, "x" * 256, "y" * 256 + "/z", "é" * 128], ["x" * 256, "y" * 256 + "/z", "é" * 128]),
    ],
)
def test_the_first_listed_key_wins_a_clash_and_names_too_long_are_refused(listing, refused):
    files: set[str] = set()
    folders: set[str] = set()
    verdicts = [bridge.placement_refusal(relative, files, folders, 255) for relative in listing]
    assert [relative for relative, why in zip(listing, verdicts) if why] == refused
