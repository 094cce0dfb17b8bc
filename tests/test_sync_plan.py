"""Planning rules of the sync job: which operations, the member floor, fingerprints, times."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from asyncsync.errors import InputError, UsageError
from asyncsync.jobs.plan import build_steps, epoch_of, floor_problem, utc_day_bounds
from asyncsync.jobs.spec import JobSpec, describe_change, input_fingerprint


def test_create_sends_the_first_batch_then_appends_the_rest() -> None:
    steps = build_steps("create", list(range(1, 1102)), 500)
    assert [(s.kind, len(s.parts)) for s in steps] == [
        ("create", 500),
        ("APPEND", 500),
        ("APPEND", 101),
    ]
    assert steps[1].parts[0] == 501


def test_replace_replaces_once_then_appends_and_remove_removes_per_batch() -> None:
    assert [s.kind for s in build_steps("replace", [1, 2, 3], 1)] == [
        "REPLACE",
        "APPEND",
        "APPEND",
    ]
    assert [s.kind for s in build_steps("remove", [1, 2, 3], 2)] == ["REMOVE", "REMOVE"]
    with pytest.raises(UsageError):
        build_steps("append", [1], 501)


def test_floor_refuses_a_replace_whose_first_batch_is_too_small() -> None:
    steps = build_steps("replace", [1, 2], 1)
    rows = {1: 600, 2: 600}
    problem = floor_problem("replace", steps, rows, None)
    assert problem is not None and "600" in problem
    assert floor_problem("replace", build_steps("replace", [1, 2], 2), rows, None) is None


def test_floor_refuses_a_remove_that_could_empty_the_audience_below_1000() -> None:
    steps = build_steps("remove", [1], 500)
    assert floor_problem("remove", steps, {1: 500}, 1400) is not None
    assert floor_problem("remove", steps, {1: 400}, 1400) is None
    assert floor_problem("append", build_steps("append", [1], 500), {1: 10}, 900) is not None
    assert floor_problem("append", build_steps("append", [1], 500), {1: 100}, 900) is None


def test_job_spec_rules_of_name_audience_id_and_action() -> None:
    assert JobSpec.from_arguments(
        advertiser_id="1", name="n", audience_id=None, action=None
    ).target == ("name:n")
    spec = JobSpec.from_arguments(advertiser_id="1", name=None, audience_id="9", action="APPEND")
    assert (spec.action, spec.target) == ("append", "id:9")
    spec = JobSpec.from_arguments(advertiser_id="1", name="n", audience_id=None, action="mirror")
    assert (spec.action, spec.target) == ("mirror", "name:n")
    for kwargs in (
        {"name": "n", "audience_id": "9", "action": "append"},
        {"name": "n", "audience_id": None, "action": "replace"},
        {"name": None, "audience_id": "9", "action": None},
        {"name": None, "audience_id": None, "action": None},
        {"name": "x" * 129, "audience_id": None, "action": None},
        {"name": "n", "audience_id": None, "action": "merge"},
    ):
        with pytest.raises(UsageError):
            JobSpec.from_arguments(advertiser_id="1", **kwargs)  # type: ignore[arg-type]


def test_fingerprint_names_what_changed_and_stdin_is_not_resumable(tmp_path: Path) -> None:
    f = tmp_path / "in.txt"
    f.write_text("a\n")
    before, resumable = input_fingerprint([f], {"hash": "sha256"}, 500)
    assert resumable and before["inputs"][0]["path"] == str(f)
    f.write_text("abc\n")
    after, _ = input_fingerprint([f], {"hash": "md5"}, 500)
    change = describe_change(before, after)
    assert "in.txt changed size (2 -> 4 bytes)" in change and "option hash" in change
    os.utime(f, ns=(1, 1))
    touched, _ = input_fingerprint([f], {"hash": "md5"}, 500)
    assert touched == after  # the same bytes: the same input, whatever the mtime
    f.write_text("abd\n")
    edited, _ = input_fingerprint([f], {"hash": "md5"}, 500)
    assert "was modified" in describe_change(after, edited)
    _, stdin_resumable = input_fingerprint(["-"], {}, 500)
    assert not stdin_resumable
    with pytest.raises(InputError, match=r"missing\.txt"):
        input_fingerprint([tmp_path / "missing.txt"], {}, 500)


def test_tiktok_times_and_utc_days() -> None:
    assert epoch_of("1970-01-02 00:00:00") == 86_400.0
    assert epoch_of(1_700_000_000_000) == 1_700_000_000.0
    assert epoch_of("soon") is None and epoch_of(None) is None
    assert utc_day_bounds(86_400 * 3 + 5) == (86_400 * 3, 86_400 * 4)
