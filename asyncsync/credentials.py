"""Where the access token and the app secret come from, and how the token is stored.

The rules: a token never comes from the command line. It is read from
``TIKTOK_ACCESS_TOKEN``, or from a token file: the one named by ``--access-token-file``, else the
default ``$XDG_CONFIG_HOME/asyncsync/token`` (``~/.config/asyncsync/token``). A token file that
its group or others may read is refused, as ssh refuses a private key with loose permissions.
``auth token`` writes the file with mode 0600 inside a 0700 directory, atomically: the file never
exists with looser permissions or half written.

Nothing here prints or logs a secret; error messages name files and variables, never values.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from asyncsync.errors import UsageError
from asyncsync.fsync import fsync_dir

__all__ = [
    "ACCESS_TOKEN_ENV",
    "APP_SECRET_ENV",
    "Credential",
    "default_token_path",
    "read_secret_file",
    "remove_token_file",
    "resolve_access_token",
    "resolve_app_secret",
    "write_token_file",
]

ACCESS_TOKEN_ENV = "TIKTOK_ACCESS_TOKEN"
APP_SECRET_ENV = "TIKTOK_APP_SECRET"

_HOW_TO_GET_A_TOKEN = (
    "get one with `asyncsync auth url --app-id ID --redirect-uri URL` then "
    "`asyncsync auth token --app-id ID --auth-code CODE`, or set TIKTOK_ACCESS_TOKEN"
)


@dataclass(frozen=True, slots=True)
class Credential:
    """A secret and where it came from (``source`` names a variable or a file, never the value)."""

    value: str
    source: str
    kind: Literal["env", "file"]
    path: Path | None = None

    def __repr__(self) -> str:
        return f"Credential(source={self.source!r}, value=<redacted>)"


def default_token_path(env: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/asyncsync/token``, or ``~/.config/asyncsync/token`` when it is unset.

    A relative ``XDG_CONFIG_HOME`` is ignored, as the XDG specification requires.
    """
    env = os.environ if env is None else env
    base = env.get("XDG_CONFIG_HOME", "")
    root = Path(base) if base and os.path.isabs(base) else Path.home() / ".config"
    return root / "asyncsync" / "token"


def read_secret_file(path: str | os.PathLike[str], *, what: str = "token file") -> str:
    """The secret held in ``path``, stripped of surrounding whitespace.

    Raises ``UsageError`` (exit 2) when the file is missing, unreadable, empty, not a regular
    file, owned by another user, or readable or writable by its group or others (fix with
    ``chmod 600``), as ssh refuses such a private key.
    """
    p = Path(path)
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise UsageError(f"{what} {p} does not exist") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UsageError(f"{what} {p} is not a regular file")
        if st.st_uid != os.geteuid():
            raise UsageError(f"{what} {p} is owned by another user (uid {st.st_uid})")
        if st.st_mode & 0o077:
            raise UsageError(
                f"{what} {p} has permissions {stat.S_IMODE(st.st_mode):04o}: it must not be "
                f"accessible by group or others (run `chmod 600 {p}`)"
            )
        raw = f.read(64 * 1024)
    try:
        value = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise UsageError(f"{what} {p} is not UTF-8 text") from None
    if not value:
        raise UsageError(f"{what} {p} is empty")
    if any(c.isspace() for c in value):
        raise UsageError(f"{what} {p} must hold one value on one line")
    return value


def resolve_access_token(
    token_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Credential:
    """The access token to use.

    Order: ``token_file`` when given (``--access-token-file``), else ``TIKTOK_ACCESS_TOKEN``,
    else the default token file. Raises ``UsageError`` (exit 2) when there is none, saying how to
    get one, and when a token file is unusable (see :func:`read_secret_file`).
    """
    env = os.environ if env is None else env
    if token_file is not None:
        path = Path(token_file)
        return Credential(read_secret_file(path), f"token file {path}", "file", path)
    value = env.get(ACCESS_TOKEN_ENV, "").strip()
    if value:
        return Credential(value, ACCESS_TOKEN_ENV, "env")
    path = default_token_path(env)
    if not path.exists():
        raise UsageError(
            f"no access token: {ACCESS_TOKEN_ENV} is unset, no --access-token-file was given "
            f"and {path} does not exist; {_HOW_TO_GET_A_TOKEN}"
        )
    return Credential(read_secret_file(path), f"token file {path}", "file", path)


def resolve_app_secret(
    secret_file: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> str:
    """The app secret: from ``secret_file`` (``--secret-file``) when given, else
    ``TIKTOK_APP_SECRET``. Raises ``UsageError`` (exit 2) when neither holds one."""
    env = os.environ if env is None else env
    if secret_file is not None:
        return read_secret_file(secret_file, what="secret file")
    value = env.get(APP_SECRET_ENV, "").strip()
    if not value:
        raise UsageError(
            f"no app secret: set {APP_SECRET_ENV} or pass --secret-file PATH "
            "(a secret is never taken from the command line)"
        )
    return value


def write_token_file(token: str, path: str | os.PathLike[str] | None = None) -> Path:
    """Store ``token`` in ``path`` (default :func:`default_token_path`) with mode 0600.

    Missing parent directories are created with mode 0700; the default directory is tightened
    to 0700 if it already exists with looser permissions. The token is written to a private
    temporary file in the same directory, flushed to disk, then renamed over ``path``, so the
    file never exists with looser permissions or partial content. Returns the path written.
    Raises ``UsageError`` when the directory cannot be written.
    """
    value = token.strip()
    if not value or any(c.isspace() for c in value):
        raise UsageError("the access token received is empty or malformed; nothing was stored")
    target = Path(path) if path is not None else default_token_path()
    parent = target.parent
    try:
        _make_private_dirs(parent, tighten=path is None)
        # mkstemp creates the file with O_EXCL and mode 0600 whatever the umask.
        fd, tmp_name = tempfile.mkstemp(dir=parent, prefix=".token-", suffix=".tmp")
    except OSError as exc:
        reason = exc.strerror or exc
        raise UsageError(f"cannot write the token file in {parent}: {reason}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(value.encode("utf-8") + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, target)
        fsync_dir(parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise UsageError(f"cannot write the token file {target}: {exc.strerror or exc}") from None
    return target


def remove_token_file(path: str | os.PathLike[str]) -> bool:
    """Delete a stored token file; ``False`` when it did not exist."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UsageError(f"cannot remove the token file {path}: {exc.strerror or exc}") from None
    return True


def _make_private_dirs(directory: Path, *, tighten: bool) -> None:
    missing: list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for m in reversed(missing):
        os.mkdir(m, 0o700)
        os.chmod(m, 0o700)  # mkdir's mode is filtered by the umask
    if tighten and not missing:
        st = directory.stat()
        if st.st_mode & 0o077 and st.st_uid == os.getuid():
            os.chmod(directory, 0o700)
