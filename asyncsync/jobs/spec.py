"""What a sync job is asked to do, checked once: the action, the audience, where its parts come
from, the run settings, and the fingerprint of its input. The library and the CLI both check
arguments here.

No I/O beyond a stat of the inputs (for an object in a store or a Parquet dataset, what its
store says about it: :func:`~asyncsync.pipeline.external.input_identity`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final

from asyncsync.errors import InputError, UsageError
from asyncsync.pipeline.external import input_identity, is_external
from asyncsync.pipeline.source import is_stream
from asyncsync.rules.limits import MAX_FILE_PATHS_PER_CALL
from asyncsync.store.journal import job_key

if TYPE_CHECKING:
    from asyncsync.pipeline.prepared import PreparedDir

__all__ = [
    "CLI_NAMES",
    "DEFAULT_REPLACE_THRESHOLD",
    "LIBRARY_NAMES",
    "STDIN",
    "ArgumentNames",
    "JobAction",
    "JobSpec",
    "RunSettings",
    "describe_change",
    "input_fingerprint",
    "inputs_changed",
    "prepared_fingerprint",
]

STDIN: Final = "-"
DEFAULT_REPLACE_THRESHOLD: Final = 0.5
"""Mirror: REPLACE instead of APPEND + REMOVE when ``added + removed`` exceeds this fraction of
the audience as last delivered. At 0.5 the diff still uploads at most about half the bytes of
a REPLACE, and TikTok's one REPLACE a day stays free for the days that need it."""


class JobAction(StrEnum):
    """What a job does to its audience (lowercase, as in the JSON summary and the journal)."""

    CREATE = "create"
    APPEND = "append"
    REMOVE = "remove"
    REPLACE = "replace"
    MIRROR = "mirror"


@dataclass(frozen=True, slots=True)
class ArgumentNames:
    """How the caller spells each argument, so that a refusal names what the caller typed."""

    advertiser_id: str
    name: str
    audience_id: str
    action: str


LIBRARY_NAMES: Final = ArgumentNames("advertiser_id", "name", "audience_id", "action")
CLI_NAMES: Final = ArgumentNames("--advertiser-id", "--name", "--audience-id", "--action")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What the caller asked for, validated: the job's identity without its input."""

    advertiser_id: str
    name: str | None
    audience_id: str | None
    action: JobAction

    @property
    def target(self) -> str:
        return f"name:{self.name}" if self.audience_id is None else f"id:{self.audience_id}"

    def key(self, api_base: str) -> str:
        """The job's identity in the journal: the same command against the same API."""
        return job_key(api_base, self.advertiser_id, self.target, self.action)

    @staticmethod
    def check_target(
        name: str | None,
        audience_id: str | None,
        action: str | None,
        *,
        names: ArgumentNames = LIBRARY_NAMES,
    ) -> JobAction:
        """The action that ``name``, ``audience_id`` and ``action`` ask for; raises
        :class:`UsageError` (naming the arguments as ``names`` spells them) when they do not
        make one job."""
        n = names
        act = action.strip().lower() if isinstance(action, str) else None
        if act is not None and act not in tuple(JobAction):
            raise UsageError(
                f"{n.action} must be one of append, remove, replace, mirror (or create), "
                f"not {action!r}"
            )
        if name is not None and audience_id is not None:
            raise UsageError(
                f"give either {n.name} (create an audience) or {n.audience_id}, not both"
            )
        if audience_id is not None:
            if not str(audience_id).strip():
                raise UsageError(f"{n.audience_id} is empty")
            if act is None or act == JobAction.CREATE:
                raise UsageError(
                    f"{n.audience_id} needs {n.action} append, remove, replace or mirror "
                    "(TikTok's own default, REPLACE, is too destructive to be implied)"
                )
            return JobAction(act)
        if name is None:
            raise UsageError(
                f"say which audience: {n.name} NAME creates one (with {n.action} mirror: "
                f"mirrors into it), {n.audience_id} ID with {n.action} ACTION updates one"
            )
        # Imported here: the wire module's package loads the HTTP client, which a check of
        # arguments does not need.
        from asyncsync.tiktok.wire import validate_name

        validate_name(name, n.name)  # before any upload: the create would refuse it anyway
        if act not in (None, JobAction.CREATE, JobAction.MIRROR):
            raise UsageError(
                f"{n.action} {act} updates an existing audience: give its {n.audience_id} "
                f"({n.name} creates a new audience; with {n.name} only mirror applies)"
            )
        return JobAction(act or JobAction.CREATE)

    @classmethod
    def from_arguments(
        cls,
        *,
        advertiser_id: str,
        name: str | None,
        audience_id: str | None,
        action: str | None,
        names: ArgumentNames = LIBRARY_NAMES,
    ) -> JobSpec:
        if not isinstance(advertiser_id, str) or not advertiser_id.strip():
            raise UsageError(f"{names.advertiser_id} is required")
        act = cls.check_target(name, audience_id, action, names=names)
        if audience_id is not None:
            return cls(advertiser_id.strip(), None, str(audience_id).strip(), act)
        return cls(advertiser_id.strip(), name, None, act)

    def check_source(
        self, inputs: Sequence[str | os.PathLike[str]], prepared: str | os.PathLike[str] | None
    ) -> None:
        """Refuse a job without input, with both inputs and a prepared directory, or that
        would mirror a prepared directory (the mirror diffs the export it prepares itself)."""
        if not inputs and prepared is None:
            raise UsageError(
                "give at least one input file (or - for standard input), or a prepared directory"
            )
        if inputs and prepared is not None:
            raise UsageError("give either input files or a prepared directory, not both")
        if prepared is not None and self.action is JobAction.MIRROR:
            raise UsageError(
                "a prepared directory cannot be mirrored: sync the export itself with action mirror"
            )


@dataclass(frozen=True, kw_only=True, slots=True)
class RunSettings:
    """How a job runs (none of it changes which job it is, except ``paths_per_call``, part
    of the fingerprint).

    ``concurrency`` uploads at once (each streams from disk: memory does not grow with it);
    ``paths_per_call`` file_paths per audience operation (1..500); a running operation is
    waited for, polling every ``poll_interval`` seconds and backing off, at most ``max_wait``
    seconds; ``replace_threshold`` is the mirror's switch from a diff to a REPLACE.
    """

    concurrency: int = 8
    paths_per_call: int = MAX_FILE_PATHS_PER_CALL
    max_wait: float = 900.0
    poll_interval: float = 1.0
    replace_threshold: float = DEFAULT_REPLACE_THRESHOLD

    def __post_init__(self) -> None:
        c = self.concurrency
        if isinstance(c, bool) or not isinstance(c, int) or c < 1:
            raise UsageError(f"concurrency must be a positive integer, not {c!r}")
        p = self.paths_per_call
        if isinstance(p, bool) or not isinstance(p, int) or not 1 <= p <= MAX_FILE_PATHS_PER_CALL:
            raise UsageError(f"paths_per_call must be in [1, {MAX_FILE_PATHS_PER_CALL}]")
        if not self.max_wait >= 0:
            raise UsageError(f"max_wait must be >= 0 seconds, not {self.max_wait!r}")
        if not self.poll_interval > 0:
            raise UsageError(f"poll_interval must be > 0 seconds, not {self.poll_interval!r}")
        t = self.replace_threshold
        if isinstance(t, bool) or not isinstance(t, int | float) or not t >= 0:
            raise UsageError(f"replace_threshold must be a number >= 0, not {t!r}")
        object.__setattr__(self, "max_wait", float(self.max_wait))
        object.__setattr__(self, "poll_interval", float(self.poll_interval))
        object.__setattr__(self, "replace_threshold", float(t))


def input_fingerprint(
    inputs: Sequence[str | os.PathLike[str]],
    prepare_fingerprint: Mapping[str, Any],
    paths_per_call: int,
) -> tuple[dict[str, Any], bool]:
    """(fingerprint, resumable): absolute paths, sizes and mtimes of the inputs (for a URL or
    a Parquet dataset, what its store says about it: ETag, version, size, mtime, of each file of
    a dataset), the prepare options that change the parts, and ``paths_per_call``. A stream
    (``-``, a pipe, a FIFO: see ``is_stream``) cannot be fingerprinted, so a job reading one is
    not resumable. Raises
    InputError for a missing input.
    """
    entries: list[dict[str, Any]] = []
    resumable = True
    for raw in inputs:
        text = os.fspath(raw)
        if is_stream(text):
            resumable = False
            entries.append({"path": text})
            continue
        if is_external(text):
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


def prepared_fingerprint(delivery: PreparedDir, paths_per_call: int) -> dict[str, Any]:
    """The fingerprint of a job delivering a prepared directory: the directory as shown, its
    parts' total size and its manifest's MD5 (the manifest lists every part's MD5), the
    manifest's prepare options, and ``paths_per_call``. Always resumable."""
    entry = {
        "path": delivery.source,
        "size": delivery.bytes,
        "manifest_md5": delivery.manifest_md5,
    }
    return {
        "inputs": [entry],
        "prepare": delivery.options.fingerprint(),
        "paths_per_call": paths_per_call,
    }


def inputs_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether the input files differ between two fingerprints (a change of options alone
    does not make a new export)."""
    return old.get("inputs") != new.get("inputs")


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
        elif a != b:  # mtime, ETag, version, a dataset's files, a manifest's MD5
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
