"""Pure planning for the sync job: its identity and fingerprint, the operations it needs, the
1,000-member floor and the daily quota arithmetic. No I/O beyond ``os.stat`` of the inputs.
"""

from __future__ import annotations

import calendar
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from asyncsync.errors import InputError, UsageError
from asyncsync.pipeline.external import input_identity, is_external
from asyncsync.rules.limits import (
    MAX_FILE_PATHS_PER_CALL,
    MIN_AUDIENCE_MEMBERS,
    Action,
)

__all__ = [
    "DAY",
    "STDIN",
    "JobSpec",
    "Step",
    "build_steps",
    "describe_change",
    "epoch_of",
    "floor_problem",
    "input_fingerprint",
    "iso_utc",
    "utc_day_bounds",
]

DAY: Final = 86_400.0
STDIN: Final = "-"
SYNC_ACTIONS: Final = ("create", "append", "remove", "replace", "mirror")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the caller asked for, validated: the job's identity without its input."""

    advertiser_id: str
    name: str | None
    audience_id: str | None
    action: str
    """``create``, ``append``, ``remove``, ``replace`` or ``mirror`` (lowercase, as in the JSON
    summary)."""

    @property
    def target(self) -> str:
        return f"name:{self.name}" if self.audience_id is None else f"id:{self.audience_id}"

    @classmethod
    def from_arguments(
        cls,
        *,
        advertiser_id: str,
        name: str | None,
        audience_id: str | None,
        action: str | None,
    ) -> JobSpec:
        if not isinstance(advertiser_id, str) or not advertiser_id.strip():
            raise UsageError("advertiser_id is required (--advertiser-id or TIKTOK_ADVERTISER_ID)")
        act = action.strip().lower() if isinstance(action, str) else None
        if act is not None and act not in SYNC_ACTIONS:
            raise UsageError(
                "--action must be one of append, remove, replace, mirror (or create), "
                f"not {action!r}"
            )
        if name is not None and audience_id is not None:
            raise UsageError("give either --name (create an audience) or --audience-id, not both")
        if audience_id is not None:
            if not str(audience_id).strip():
                raise UsageError("--audience-id is empty")
            if act is None or act == "create":
                raise UsageError(
                    "--audience-id needs --action append, remove or replace (TikTok's own "
                    "default, REPLACE, is too destructive to be implied)"
                )
            return cls(advertiser_id.strip(), None, str(audience_id).strip(), act)
        if name is None:
            raise UsageError("give --name to create an audience, or --audience-id to update one")
        from asyncsync.tiktok.wire import validate_name

        validate_name(name, "--name")  # before any upload: the create would refuse it anyway
        if act == "mirror":
            # The audience this tool last mirrored under the name (created on the first run).
            return cls(advertiser_id.strip(), name, None, "mirror")
        if act not in (None, "create"):
            raise UsageError(
                f"--action {act} updates an existing audience: give its --audience-id "
                "(--name creates a new audience)"
            )
        return cls(advertiser_id.strip(), name, None, "create")


@dataclass(frozen=True, slots=True)
class Step:
    """One audience operation of the plan: ``kind`` is ``create`` or an update action."""

    index: int
    kind: str
    parts: tuple[int, ...]
    """Indices of the parts whose file_paths the operation sends."""

    @property
    def is_update(self) -> bool:
        return self.kind != "create"


def build_steps(action: str, part_indices: Sequence[int], paths_per_call: int) -> list[Step]:
    """The operations of a job: batches of at most ``paths_per_call`` parts, in index order.

    create: create with the first batch, APPEND the rest; replace: REPLACE then APPEND;
    append and remove: one operation of that kind per batch.
    """
    if not 1 <= paths_per_call <= MAX_FILE_PATHS_PER_CALL:
        raise UsageError(f"paths_per_call must be in [1, {MAX_FILE_PATHS_PER_CALL}]")
    ordered = sorted(part_indices)
    batches = [
        tuple(ordered[i : i + paths_per_call]) for i in range(0, len(ordered), paths_per_call)
    ]
    steps: list[Step] = []
    for i, batch in enumerate(batches):
        if action == "create":
            kind = "create" if i == 0 else Action.APPEND.value
        elif action == "replace":
            kind = Action.REPLACE.value if i == 0 else Action.APPEND.value
        elif action == "append":
            kind = Action.APPEND.value
        elif action == "remove":
            kind = Action.REMOVE.value
        else:
            raise UsageError(f"unknown action {action!r}")
        steps.append(Step(i, kind, batch))
    return steps


def floor_problem(
    action: str,
    steps: Sequence[Step],
    rows_of: Mapping[int, int],
    cover_num: int | None,
    *,
    floor: int = MIN_AUDIENCE_MEMBERS,
) -> str | None:
    """Why the plan would break TikTok's 1,000-member floor, when that can be told beforehand.

    - replace: the REPLACE keeps only its own batch's IDs (parts are deduplicated, so their row
      counts add up exactly);
    - create with several batches: after the first APPEND the audience holds at most the first
      two batches;
    - append: at most ``cover_num`` plus every input ID;
    - remove: at worst every input ID is a member, leaving ``cover_num - rows``. A removal that
      is refused halfway would leave the audience partly updated, so the worst case is refused.
    """
    if not steps:
        return None

    def rows(step: Step) -> int:
        return sum(rows_of.get(i, 0) for i in step.parts)

    total = sum(rows(s) for s in steps)
    if action == "replace" and rows(steps[0]) < floor:
        return (
            f"REPLACE would leave the audience with {rows(steps[0])} IDs, fewer than TikTok's "
            f"floor of {floor:,} members"
        )
    if action == "create" and len(steps) > 1 and rows(steps[0]) + rows(steps[1]) < floor:
        return (
            f"the first APPEND after create would leave {rows(steps[0]) + rows(steps[1])} IDs, "
            f"fewer than TikTok's floor of {floor:,} members (use a larger --paths-per-call)"
        )
    if cover_num is None:
        return None
    if action == "append" and cover_num + total < floor:
        return (
            f"APPEND would leave the audience with at most {cover_num + total} members, fewer "
            f"than TikTok's floor of {floor:,}"
        )
    if action == "remove" and cover_num - total < floor:
        return (
            f"REMOVE of up to {total} IDs from an audience of {cover_num} members could leave "
            f"fewer than TikTok's floor of {floor:,} members"
        )
    return None


def utc_day_bounds(now: float) -> tuple[float, float]:
    """The UTC day holding ``now``: ``[start, end)`` in epoch seconds."""
    start = math.floor(now / DAY) * DAY
    return start, start + DAY


def iso_utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def epoch_of(value: object) -> float | None:
    """TikTok's time fields (``YYYY-MM-DD HH:MM:SS`` UTC, or epoch seconds/milliseconds)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 10**11 else float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return epoch_of(int(text))
        for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ"):
            try:
                return float(calendar.timegm(time.strptime(text, fmt)))
            except ValueError:
                continue
    return None


def input_fingerprint(
    inputs: Sequence[str | os.PathLike[str]],
    prepare_fingerprint: Mapping[str, Any],
    paths_per_call: int,
) -> tuple[dict[str, Any], bool]:
    """(fingerprint, resumable): absolute paths, sizes and mtimes of the inputs, the prepare
    options that change the parts, and ``paths_per_call``. Standard input (``-``) cannot be
    fingerprinted, so a job reading it is not resumable. Raises InputError for a missing input.
    """
    entries: list[dict[str, Any]] = []
    resumable = True
    for raw in inputs:
        text = os.fspath(raw)
        if text == STDIN:
            resumable = False
            entries.append({"path": STDIN})
            continue
        if is_external(text):  # a URL or a Parquet dataset: what its store says about it
            entries.append(input_identity(text))
            continue
        path = os.path.abspath(text)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise InputError(f"{text}: no such file", path=text) from None
        except OSError as exc:
            raise InputError(f"{text}: cannot read it: {exc.strerror or exc}", path=text) from exc
        if not os.path.isfile(path):
            raise InputError(f"{text}: not a regular file", path=text)
        entries.append({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    fingerprint = {
        "inputs": entries,
        "prepare": dict(prepare_fingerprint),
        "paths_per_call": paths_per_call,
    }
    return fingerprint, resumable


def describe_change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    """What differs between two fingerprints, in words ("export.csv changed size ...")."""
    old_inputs = {e["path"]: e for e in old.get("inputs", [])}
    new_inputs = {e["path"]: e for e in new.get("inputs", [])}
    changes = [f"{path} was added" for path in sorted(new_inputs.keys() - old_inputs.keys())]
    changes += [
        f"{path} is no longer given" for path in sorted(old_inputs.keys() - new_inputs.keys())
    ]
    for path in sorted(old_inputs.keys() & new_inputs.keys()):
        a, b = old_inputs[path], new_inputs[path]
        if a.get("size") != b.get("size"):
            changes.append(f"{path} changed size ({a.get('size')} -> {b.get('size')} bytes)")
        elif a != b:
            changes.append(f"{path} was modified")
    if not changes and list(old_inputs) != list(new_inputs):
        changes.append("the inputs are given in another order")
    old_opts, new_opts = old.get("prepare", {}), new.get("prepare", {})
    changes += [
        f"option {key} changed ({old_opts.get(key)!r} -> {new_opts.get(key)!r})"
        for key in sorted(set(old_opts) | set(new_opts))
        if old_opts.get(key) != new_opts.get(key)
    ]
    if old.get("paths_per_call") != new.get("paths_per_call"):
        changes.append(
            f"paths_per_call changed ({old.get('paths_per_call')} -> {new.get('paths_per_call')})"
        )
    return "; ".join(changes) or "the input fingerprint differs"
