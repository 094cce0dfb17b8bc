"""Settling operations of unknown outcome: an intent the journal holds without a result (the
process died, or the answer was lost) is decided by reading TikTok's state before the job acts
again. A create is looked up by name, an update in the audience's history.

Erring is only ever allowed in one direction: an update that did happen may be taken as absent
(it is sent again, costing one daily operation), never the reverse (a batch lost); a create is
adopted when an audience of its name appeared that nothing else in the journal owns.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from asyncsync.errors import OutcomeUnknownError, UsageError
from asyncsync.jobs.plan import epoch_of
from asyncsync.jobs.spec import JobSpec
from asyncsync.store.journal import Journal, OperationKind, OperationRow, Outcome
from asyncsync.tiktok.audience_state import operations_since
from asyncsync.tiktok.client import TikTokClient
from asyncsync.tiktok.wire import Audience

__all__ = ["HISTORY_SIZE", "Reconciler", "get_audience"]

HISTORY_SIZE: Final = 50
"""History entries read when reconciling an update whose outcome is unknown."""
HISTORY_SLACK_S: Final = 2.0
"""TikTok's ``opt_time`` has one-second resolution: allow for it when matching an intent."""
RECONCILE_LOOKS: Final = 3
"""Times, at least, the audience list is read before concluding that a create did not happen."""
MAX_LOOK_INTERVAL_S: Final = 30.0
"""The longest pause between two reads of the audience list while looking for a create."""


async def get_audience(
    client: TikTokClient, advertiser_id: str, audience_id: str, history_size: int | None = None
) -> Audience:
    """The audience as TikTok shows it now; UsageError when the advertiser has no such one."""
    found = await client.get_audiences(advertiser_id, [audience_id], history_size=history_size)
    for audience in found:
        if audience.audience_id == audience_id:
            return audience
    raise UsageError(f"audience {audience_id} was not found for advertiser {advertiser_id}")


@dataclass(frozen=True, kw_only=True)
class Reconciler:
    """Decides, from TikTok's state, the outcome of a job's operations the journal lacks."""

    client: TikTokClient
    journal: Journal
    spec: JobSpec
    api_base: str
    clock: Callable[[], float]
    poll_interval: float
    window: float
    """Seconds after its intent that a create of unknown outcome is looked for."""

    async def settle(self, job_id: int, audience_id: str | None) -> list[str]:
        """Settle every operation of the job whose outcome is unknown; returns the audiences
        that creates were found to have made (adopted by the job)."""
        adopted: list[str] = []
        for op in self.journal.operations(job_id):
            if op.outcome is not None:
                continue
            if op.kind is OperationKind.CREATE:
                made = await self.create(op)
                if made is not None:
                    adopted.append(made)
                    audience_id = made
            else:
                await self.update(op, op.audience_id or audience_id)
        return adopted

    async def create(self, op: OperationRow, *, live: bool = False) -> str | None:
        """Did this create happen? Look for an audience of that name that did not exist before
        the intent and that no journaled job owns; adopt it (the journal makes it the job's
        audience), or record that none was made. Returns the adopted audience.

        TikTok may carry a create out long after its request went unanswered, so the audience
        is looked for (backing off) until ``window`` seconds after the intent. ``live``: the
        create was just sent by this run; if the window passes without a sign of it, its
        outcome stays unknown and :class:`OutcomeUnknownError` stops the job (the same command
        looks again before it ever creates). Otherwise (a rerun settling the intent) an
        audience still absent once the window has passed is taken as not made.
        """
        name = self.spec.name
        known = set(op.detail.get("known_ids", ())) | self.journal.claimed_audience_ids(
            self.api_base, self.spec.advertiser_id
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + max(0.0, op.intent_at + self.window - self.clock())
        delay = self.poll_interval
        candidates: list[Audience] = []
        for attempt in itertools.count():
            if attempt:
                # A create that did happen may take a while to show in the list.
                await asyncio.sleep(max(0.0, min(delay, end - loop.time())))
                delay = min(delay * 2, MAX_LOOK_INTERVAL_S)
            audiences = await self.client.list_audiences(self.spec.advertiser_id)
            candidates = [a for a in audiences if a.name == name and a.audience_id not in known]
            if candidates or (attempt + 1 >= RECONCILE_LOOKS and loop.time() >= end):
                break
        if not candidates:
            if live:
                raise OutcomeUnknownError(
                    f"creating audience {name!r}: TikTok did not answer and the audience did "
                    f"not appear within {self.window:.0f} s; outcome unknown; the same command "
                    "reconciles (it looks for the audience again before it ever creates one)"
                )
            self.journal.finish_operation(
                op.id, Outcome.ABSENT, now=self.clock(), detail={"reconciled": True}
            )
            return None

        def created(a: Audience) -> tuple[float, str]:
            t = epoch_of(a.create_time)
            return (t if t is not None else float("inf"), a.audience_id)

        adopted = min(candidates, key=created)
        self.journal.finish_operation(
            op.id,
            Outcome.DONE,
            now=self.clock(),
            audience_id=adopted.audience_id,
            detail={"reconciled": True},
        )
        return adopted.audience_id

    async def update(self, op: OperationRow, audience_id: str | None) -> bool:
        """Did this update happen? Count the audience's history entries since the intent, minus
        those the journal already attributes to other operations."""
        assert audience_id is not None
        audience = await get_audience(
            self.client, self.spec.advertiser_id, audience_id, history_size=HISTORY_SIZE
        )
        window = op.intent_at - HISTORY_SLACK_S
        # Any history entry counts, whatever its (undocumented) action; when the history cannot
        # tell, the update is taken as not applied: resending APPEND, REMOVE or REPLACE cannot
        # double-count a member (docs/tiktok-api.md, "Reconciling a create or an update").
        seen = operations_since(audience, window) or 0
        # Our own operations that TikTok may have stamped inside the window: any whose answer
        # came after its start, and any of another job whose outcome is still unknown (an
        # abandoned job's). Erring this way can only make a done operation look absent (it
        # is sent again, costing one daily operation), never the reverse (a batch lost).
        others = [
            o
            for o in self.journal.operations_on(self.api_base, self.spec.advertiser_id, audience_id)
            if o.id != op.id
            and Outcome.applied_or_unknown(o.outcome)
            and (o.result_at if o.result_at is not None else o.intent_at) >= window
        ]
        applied = seen > len(others)
        self.journal.finish_operation(
            op.id,
            Outcome.DONE if applied else Outcome.ABSENT,
            now=self.clock(),
            detail={"reconciled": True},
        )
        return applied
