"""Keep the sandbox's state in a file, so a restarted sandbox serves the same audiences.

``asyncsync sandbox --state FILE`` (or ``Sandbox(state_file=...)``) loads FILE at start when it
exists and writes it after every request that changed something, atomically (a temporary file
renamed over it), so a killed sandbox loses at most the request it was answering. Digests are
stored base64-encoded; the file holds every live uploaded file and every audience's members, so
it is meant for rehearsals, not for benchmark-sized states.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Final

from asyncsync.errors import UsageError
from asyncsync.sandbox.state import (
    Audience,
    AuthCode,
    Operation,
    SandboxState,
    TokenInfo,
    UploadedFile,
)

__all__ = ["dump_state", "load_state", "read_state", "save_state"]

FORMAT: Final = "asyncsync-sandbox-state/1"


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _file(f: UploadedFile) -> dict[str, Any]:
    return {
        "file_path": f.file_path,
        "advertiser_id": f.advertiser_id,
        "calculate_type": f.calculate_type,
        "uploaded_calculate_type": f.uploaded_calculate_type,
        "digests": _b64(f.digests),
        "digest_size": f.digest_size,
        "size_bytes": f.size_bytes,
        "lines": f.lines,
        "md5": f.md5,
        "filename": f.filename,
        "expires": f.expires,
    }


def _unfile(d: dict[str, Any]) -> UploadedFile:
    known = {k: v for k, v in d.items() if k in UploadedFile.__dataclass_fields__}
    return UploadedFile(**{**known, "digests": _unb64(d["digests"])})


def _operation(op: Operation) -> dict[str, Any]:
    return {
        "action": op.action,
        "started": op.started,
        "ends": op.ends,
        # A finished operation only needs its file count (for the history's action_detail).
        "files": [_file(f) for f in op.files] if not op.done else [],
        "file_count": len(op.files),
        "msg": op.msg,
        "done": op.done,
        "replacement": _b64(b"".join(sorted(op.replacement)))
        if op.replacement is not None
        else None,
    }


def _unoperation(d: dict[str, Any], digest_size: int) -> Operation:
    files = [_unfile(f) for f in d["files"]]
    if d["done"] and not files:
        files = [_placeholder()] * int(d["file_count"])
    blob = d["replacement"]
    replacement = None
    if blob is not None:
        raw = _unb64(blob)
        replacement = {raw[i : i + digest_size] for i in range(0, len(raw), digest_size)}
    return Operation(
        action=d["action"],
        started=d["started"],
        ends=d["ends"],
        files=files,
        msg=d["msg"],
        done=d["done"],
        replacement=replacement,
    )


def _placeholder() -> UploadedFile:
    return UploadedFile("", "", "", "", b"", 32, 0, 0, "", "", 0.0)


def _audience(a: Audience) -> dict[str, Any]:
    return {
        "audience_id": a.audience_id,
        "advertiser_id": a.advertiser_id,
        "name": a.name,
        "calculate_type": a.calculate_type,
        "sub_type": a.sub_type,
        "retention_in_days": a.retention_in_days,
        "create_time": a.create_time,
        "expires": a.expires,
        "members": _b64(b"".join(sorted(a.members))),
        "file_paths": a.file_paths,
        "history": [_operation(op) for op in a.history],
        "day_ops": {str(k): v for k, v in a.day_ops.items()},
        "day_replaces": {str(k): v for k, v in a.day_replaces.items()},
    }


def _unaudience(d: dict[str, Any]) -> Audience:
    size = 16 if str(d["calculate_type"]).endswith("_MD5") else 32
    raw = _unb64(d["members"])
    return Audience(
        audience_id=d["audience_id"],
        advertiser_id=d["advertiser_id"],
        name=d["name"],
        calculate_type=d["calculate_type"],
        sub_type=d["sub_type"],
        retention_in_days=d["retention_in_days"],
        create_time=d["create_time"],
        expires=d["expires"],
        members={raw[i : i + size] for i in range(0, len(raw), size)},
        file_paths=list(d["file_paths"]),
        history=[_unoperation(op, size) for op in d["history"]],
        day_ops={int(k): int(v) for k, v in d["day_ops"].items()},
        day_replaces={int(k): int(v) for k, v in d["day_replaces"].items()},
    )


def dump_state(state: SandboxState) -> dict[str, Any]:
    """Everything a restarted sandbox needs, as JSON-ready values."""
    rng_version, rng_internal, rng_gauss = state.rng_state()
    return {
        "format": FORMAT,
        "clock_offset": state.clock.offset,
        "rng": [rng_version, list(rng_internal), rng_gauss],
        "tokens": {
            token: {
                "advertiser_ids": sorted(info.advertiser_ids)
                if info.advertiser_ids is not None
                else None,
                "app_id": info.app_id,
                "revoked": info.revoked,
            }
            for token, info in state.tokens.items()
        },
        "apps": {app: [secret, list(ids)] for app, (secret, ids) in state.apps.items()},
        "auth_codes": {
            code: {
                "app_id": c.app_id,
                "advertiser_ids": list(c.advertiser_ids),
                "expires": c.expires,
                "used": c.used,
            }
            for code, c in state.auth_codes.items()
        },
        "files": [_file(f) for f in state.files.values()],
        "expired_files": state.expired_files,
        "audiences": [_audience(a) for a in state.audiences.values()],
        "uploads": state.uploads,
        "upload_bytes": state.upload_bytes,
    }


def load_state(state: SandboxState, doc: dict[str, Any]) -> None:
    """Replace ``state``'s contents with a document of :func:`dump_state`."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UsageError(f"not a sandbox state file of format {FORMAT}")
    offset = float(doc["clock_offset"])
    if offset > state.clock.offset:
        state.clock.advance(offset - state.clock.offset)
    version, internal, gauss = doc["rng"]
    state.set_rng_state((version, tuple(internal), gauss))
    state.tokens = {
        token: TokenInfo(
            frozenset(t["advertiser_ids"]) if t["advertiser_ids"] is not None else None,
            t["app_id"],
            t["revoked"],
        )
        for token, t in doc["tokens"].items()
    }
    state.apps = {app: (secret, tuple(ids)) for app, (secret, ids) in doc["apps"].items()}
    state.auth_codes = {
        code: AuthCode(c["app_id"], tuple(c["advertiser_ids"]), c["expires"], c["used"])
        for code, c in doc["auth_codes"].items()
    }
    state.files = {f["file_path"]: _unfile(f) for f in doc["files"]}
    state.expired_files = dict(doc["expired_files"])
    state.audiences = {a["audience_id"]: _unaudience(a) for a in doc["audiences"]}
    state.uploads = int(doc["uploads"])
    state.upload_bytes = int(doc["upload_bytes"])


def save_state(state: SandboxState, path: Path) -> None:
    """Write the state to ``path`` atomically (a crash leaves the old file or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(dump_state(state), out, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_state(state: SandboxState, path: Path) -> bool:
    """Load ``path`` into ``state`` if it exists; True when it did."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise UsageError(f"--state {path}: cannot read it: {exc.strerror}") from None
    try:
        load_state(state, json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"--state {path}: not a sandbox state file ({exc})") from None
    return True
