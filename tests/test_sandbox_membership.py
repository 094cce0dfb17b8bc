"""Property: the sandbox's audience membership follows set algebra over the files' digests."""

from __future__ import annotations

import hashlib

import pytest
from helpers.api import ADVERTISER
from hypothesis import given, settings
from hypothesis import strategies as st

from asyncsync.sandbox import SandboxClock, SandboxConfig, SandboxState
from asyncsync.sandbox.state import ApiError

UNIVERSE = [hashlib.sha256(str(i).encode()).digest() for i in range(12)]

subsets = st.sets(st.sampled_from(range(len(UNIVERSE))), min_size=0, max_size=len(UNIVERSE))
steps = st.lists(
    st.tuples(st.sampled_from(["APPEND", "REMOVE", "REPLACE"]), st.lists(subsets, min_size=1)),
    max_size=12,
)


def new_state() -> SandboxState:
    config = SandboxConfig(
        operation_seconds=0, min_members=0, daily_operations=1000, daily_replaces=1000
    )
    return SandboxState(config, SandboxClock())


def upload(state: SandboxState, members: set[int]) -> str:
    blob = b"".join(UNIVERSE[i] for i in sorted(members))
    entry = state.add_file(
        advertiser_id=ADVERTISER,
        uploaded_calculate_type="FIRST_SHA256",
        digests=blob,
        size_bytes=len(blob) * 2,
        lines=len(members),
        md5="",
        filename="ids.csv",
    )
    return entry.file_path


@settings(max_examples=60, deadline=None)
@given(first=st.lists(subsets, min_size=1, max_size=3), ops=steps)
def test_membership_is_union_then_append_remove_replace_as_sets(
    first: list[set[int]], ops: list[tuple[str, list[set[int]]]]
) -> None:
    state = new_state()
    audience = state.create(
        advertiser_id=ADVERTISER,
        name="prop",
        file_paths=[upload(state, s) for s in first],
        calculate_type="FIRST_SHA256",
        sub_type=None,
        retention_in_days=None,
    )
    model: set[int] = set().union(*first)
    for action, files in ops:
        incoming: set[int] = set().union(*files)
        paths = [upload(state, s) for s in files]
        expected = {
            "APPEND": model | incoming,
            "REMOVE": model - incoming,
            "REPLACE": incoming,
        }[action]
        if action == "REMOVE" and not expected:
            with pytest.raises(ApiError) as refused:
                state.update(
                    advertiser_id=ADVERTISER,
                    audience_id=audience.audience_id,
                    name=None,
                    file_paths=paths,
                    action=action,
                    sub_type=None,
                )
            assert refused.value.code == 40002
        else:
            state.update(
                advertiser_id=ADVERTISER,
                audience_id=audience.audience_id,
                name=None,
                file_paths=paths,
                action=action,
                sub_type=None,
            )
            model = expected
        assert state.members_hex(audience.audience_id) == {UNIVERSE[i].hex() for i in model}
