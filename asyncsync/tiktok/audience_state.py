"""Reading an audience's state from what ``get`` returns: is an operation running, is it
expired or expiring, how many operations has TikTok recorded since a moment.

These are the decisions the job layer takes from TikTok's answers; each uses only fields TikTok
documents (docs/tiktok-api.md, "Reading an audience's state").
"""

from __future__ import annotations

import calendar
import time

from asyncsync.tiktok.wire import Audience

__all__ = [
    "history_mark",
    "history_since_mark",
    "is_expired",
    "operation_running",
    "operations_since",
    "tiktok_time",
]

_TIME_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%SZ")


def tiktok_time(value: object) -> float | None:
    """Epoch seconds of one of TikTok's time fields (``YYYY-MM-DD HH:MM:SS`` UTC, or epoch
    seconds or milliseconds); None when absent or unreadable."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000.0 if value > 10**11 else float(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return tiktok_time(int(text))
        for fmt in _TIME_FORMATS:
            try:
                return float(calendar.timegm(time.strptime(text, fmt)))
            except ValueError:
                continue
    return None


def is_expired(audience: Audience, now: float | None = None) -> bool:
    """The audience's ``expired_time`` has passed (an audience without one never expires)."""
    expires = tiktok_time(audience.expired_time)
    return expires is not None and expires <= (time.time() if now is None else now)


def operation_running(audience: Audience, now: float | None = None) -> bool:
    """Whether TikTok is still calculating an operation on the audience.

    TikTok documents ``is_valid`` as false while the audience is calculating *or* once it has
    expired, and ``is_expiring`` as true within 60 days of ``expired_time``. So ``is_valid:
    false`` means "running" only for an audience that is neither expired nor expiring: an
    expiring or expired audience can only be deleted, and waiting for it would never end.
    """
    if audience.is_valid is not False:
        return False
    return not (audience.is_expiring or is_expired(audience, now))


def operations_since(audience: Audience, since: float) -> int | None:
    """How many entries of ``audience_history`` TikTok stamped at or after ``since``.

    Only ``opt_time`` is read: the values of ``action`` in the history are not documented, so
    an entry counts whatever its action. None when the history cannot tell (it is empty or an
    entry has no readable ``opt_time``); the caller then takes the path that cannot
    double-count.
    """
    if not audience.history:
        return None
    seen = 0
    for entry in audience.history:
        at = tiktok_time(entry.opt_time)
        if at is None:
            return None
        if at >= since:
            seen += 1
    return seen


def history_mark(audience: Audience) -> dict[str, float | int] | None:
    """Where the audience's history stands now, in TikTok's own stamps: the newest ``opt_time``
    and how many entries carry it (``opt_time`` has one-second resolution). None when the
    history cannot tell (empty, or an entry without a readable ``opt_time``)."""
    if not audience.history:
        return None
    stamps = [tiktok_time(entry.opt_time) for entry in audience.history]
    known = [t for t in stamps if t is not None]
    if len(known) != len(stamps):
        return None
    newest = max(known)
    return {"newest": newest, "at_newest": sum(1 for t in known if t == newest)}


def history_since_mark(audience: Audience, mark: dict[str, float | int]) -> int | None:
    """How many operations TikTok recorded on the audience after ``mark`` (from
    :func:`history_mark`): entries stamped later, plus entries stamped in the same second
    beyond those the mark counted. Clock-independent: both sides are TikTok's stamps. None
    when the history cannot tell."""
    if not audience.history:
        return None
    newest = float(mark["newest"])
    later = 0
    same = 0
    for entry in audience.history:
        at = tiktok_time(entry.opt_time)
        if at is None:
            return None
        if at > newest:
            later += 1
        elif at == newest:
            same += 1
    return later + max(0, same - int(mark["at_newest"]))
