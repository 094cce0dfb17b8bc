"""Token lookup and storage: where a token comes from, and that it is stored privately."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from asyncsync.credentials import (
    default_token_path,
    read_secret_file,
    resolve_access_token,
    resolve_app_secret,
    write_token_file,
)
from asyncsync.errors import UsageError

SENTINEL = "tok-SENTINEL-4f1c9a"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_token_path_follows_xdg_config_home(tmp_path: Path) -> None:
    assert default_token_path({"XDG_CONFIG_HOME": str(tmp_path)}) == tmp_path / "asyncsync/token"


def test_default_token_path_ignores_relative_xdg_and_falls_back_to_dot_config() -> None:
    assert default_token_path({"XDG_CONFIG_HOME": "rel"}) == (
        Path.home() / ".config" / "asyncsync" / "token"
    )


def test_written_token_file_is_0600_in_a_new_0700_directory(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "token"
    old = os.umask(0o022)
    try:
        written = write_token_file(SENTINEL, target)
    finally:
        os.umask(old)
    assert written == target
    assert target.read_text() == SENTINEL + "\n"
    assert _mode(target) == 0o600
    assert _mode(target.parent) == 0o700
    assert _mode(target.parent.parent) == 0o700
    assert [p.name for p in target.parent.iterdir()] == ["token"]  # no temporary file left


def test_default_token_directory_is_tightened_to_0700(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config"
    (config / "asyncsync").mkdir(parents=True, mode=0o755)
    os.chmod(config / "asyncsync", 0o755)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    path = write_token_file(SENTINEL)
    assert path == config / "asyncsync" / "token"
    assert _mode(path.parent) == 0o700


def test_token_file_is_never_visible_with_loose_permissions_while_written(tmp_path: Path) -> None:
    """Watch the directory while tokens are rewritten: every file seen in it is private."""
    target = tmp_path / "private" / "token"
    write_token_file("first", target)
    seen_loose: list[tuple[str, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for entry in os.scandir(target.parent):
                try:
                    mode = stat.S_IMODE(entry.stat().st_mode)
                except FileNotFoundError:
                    continue
                if mode & 0o077:
                    seen_loose.append((entry.name, mode))

    watcher = threading.Thread(target=watch)
    old = os.umask(0)
    watcher.start()
    try:
        for i in range(100):
            write_token_file(f"token-{i}", target)
    finally:
        stop.set()
        watcher.join()
        os.umask(old)
    assert seen_loose == []
    assert target.read_text() == "token-99\n"


def test_group_readable_token_file_is_refused_naming_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(SENTINEL)
    os.chmod(path, 0o640)
    with pytest.raises(UsageError, match="chmod 600") as info:
        resolve_access_token(path, env={})
    assert SENTINEL not in str(info.value)


def test_explicit_token_file_wins_over_environment(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_token_file(SENTINEL, path)
    cred = resolve_access_token(path, env={"TIKTOK_ACCESS_TOKEN": "from-env"})
    assert (cred.value, cred.kind, cred.path) == (SENTINEL, "file", path)
    assert SENTINEL not in repr(cred)


def test_environment_wins_over_default_token_file(tmp_path: Path) -> None:
    write_token_file("from-file", tmp_path / "asyncsync" / "token")
    env = {"TIKTOK_ACCESS_TOKEN": "from-env", "XDG_CONFIG_HOME": str(tmp_path)}
    assert resolve_access_token(env=env).value == "from-env"
    del env["TIKTOK_ACCESS_TOKEN"]
    cred = resolve_access_token(env=env)
    assert (cred.value, cred.path) == ("from-file", tmp_path / "asyncsync" / "token")


def test_no_token_anywhere_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="asyncsync auth url") as info:
        resolve_access_token(env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("content", "message"), [("", "empty"), ("  \n", "empty"), ("a b", "one value")]
)
def test_malformed_token_files_are_refused(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "token"
    path.write_text(content)
    os.chmod(path, 0o600)
    with pytest.raises(UsageError, match=message):
        read_secret_file(path)


def test_missing_token_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"token file .*nope does not exist"):
        resolve_access_token(tmp_path / "nope", env={})


def test_app_secret_from_file_or_environment_never_elsewhere(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    write_token_file("s3cret", secret_file)
    assert resolve_app_secret(secret_file, env={}) == "s3cret"
    assert resolve_app_secret(env={"TIKTOK_APP_SECRET": "env-secret"}) == "env-secret"
    with pytest.raises(UsageError, match="TIKTOK_APP_SECRET"):
        resolve_app_secret(env={})
    os.chmod(secret_file, 0o644)
    with pytest.raises(UsageError, match="secret file"):
        resolve_app_secret(secret_file, env={})


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_token_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "token"
    write_token_file(SENTINEL, path)
    os.chown(path, 4242, -1)
    with pytest.raises(UsageError, match="owned by another user"):
        read_secret_file(path)
