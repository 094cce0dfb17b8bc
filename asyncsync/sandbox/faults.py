"""Fault injection for the sandbox: seeded, per kind, optionally limited to some endpoints."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any

from asyncsync.errors import UsageError

__all__ = ["Fault", "FaultConfig", "FaultInjector", "ScriptedAnswer"]


class Fault(StrEnum):
    """The kinds of fault the sandbox injects (the keys of ``fault_counts``)."""

    DROP = "drop"
    HTTP_503 = "http_503"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    SLOW = "slow"


@dataclass(frozen=True, kw_only=True)
class FaultConfig:
    """Probabilities (0..1) of each fault, drawn independently per request from a seeded RNG.

    - ``rate_limit``: answer HTTP 200 with code 40100 instead of running the request.
    - ``server_error``: answer HTTP 200 with code 50002.
    - ``http_503``: answer HTTP 503 with an HTML body (no envelope), as a gateway does.
    - ``slow``: sleep ``slow_seconds`` (real time) before handling the request; combines with the
      others.
    - ``drop``: close the connection mid-request without an answer (the request is not run).
    - ``endpoints``: paths (``/open_api/v1.3/...``, or their tail such as
      ``/dmp/custom_audience/file/upload/``) the faults apply to; ``None`` means every
      ``/open_api/`` endpoint.

    At most one of drop, http_503, rate_limit, server_error happens per request (in that order of
    precedence). Memory: constant.
    """

    rate_limit: float = 0.0
    server_error: float = 0.0
    http_503: float = 0.0
    slow: float = 0.0
    slow_seconds: float = 1.0
    drop: float = 0.0
    seed: int | None = 0
    endpoints: frozenset[str] | None = None

    def __post_init__(self) -> None:
        for name in ("rate_limit", "server_error", "http_503", "slow", "drop"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UsageError(f"FaultConfig.{name} must be a number, not {value!r}")
            if not 0.0 <= float(value) <= 1.0:
                raise UsageError(f"FaultConfig.{name} must be a probability in [0, 1], not {value}")
        if not 0.0 <= float(self.slow_seconds) <= 3600.0:
            raise UsageError(
                f"FaultConfig.slow_seconds must be in [0, 3600], not {self.slow_seconds}"
            )
        if self.endpoints is not None:
            object.__setattr__(self, "endpoints", frozenset(str(e) for e in self.endpoints))

    @classmethod
    def from_json(cls, obj: Any) -> FaultConfig:
        """Build from a JSON object (unknown keys refused; ``endpoints`` a list or null)."""
        if not isinstance(obj, dict):
            raise UsageError("fault configuration must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise UsageError(f"unknown fault option(s): {', '.join(unknown)}")
        kwargs = dict(obj)
        if kwargs.get("endpoints") is not None:
            if not isinstance(kwargs["endpoints"], list):
                raise UsageError("endpoints must be a list of paths or null")
            kwargs["endpoints"] = frozenset(kwargs["endpoints"])
        return cls(**kwargs)

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["endpoints"] = sorted(self.endpoints) if self.endpoints is not None else None
        return out

    @property
    def active(self) -> bool:
        return any((self.rate_limit, self.server_error, self.http_503, self.slow, self.drop))


@dataclass
class FaultInjector:
    """Draws the faults of each request from ``config`` and counts what it injected."""

    config: FaultConfig = field(default_factory=FaultConfig)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.config.seed)

    def configure(self, config: FaultConfig) -> None:
        """Replace the configuration and reseed the RNG (counts are kept)."""
        self.config = config
        self._rng = random.Random(config.seed)

    def applies_to(self, path: str) -> bool:
        endpoints = self.config.endpoints
        if endpoints is None:
            return True
        return any(path == e or path.endswith(e) for e in endpoints)

    def draw(self, path: str) -> tuple[bool, Fault | None]:
        """``(slow, fault)`` for one request to ``path``; counts whatever it returns."""
        cfg = self.config
        if not cfg.active or not self.applies_to(path):
            return False, None
        rng = self._rng
        slow = cfg.slow > 0 and rng.random() < cfg.slow
        fault: Fault | None = None
        for kind, probability in (
            (Fault.DROP, cfg.drop),
            (Fault.HTTP_503, cfg.http_503),
            (Fault.RATE_LIMIT, cfg.rate_limit),
            (Fault.SERVER_ERROR, cfg.server_error),
        ):
            if probability > 0 and rng.random() < probability:
                fault = kind
                break
        if slow:
            self.counts[Fault.SLOW.value] += 1
        if fault is not None:
            self.counts[fault.value] += 1
        return slow, fault


@dataclass(kw_only=True)
class ScriptedAnswer:
    """An answer the sandbox gives to the next ``times`` requests to ``endpoint`` (a path or its
    tail, such as ``/dmp/custom_audience/create/``) instead of its own.

    - ``code`` / ``message``: TikTok's envelope (HTTP 200) to answer, e.g. 50002 SYS_TIMEOUT,
      51010 INTERNAL_TIME_OUT, or a 40002 parameter error.
    - ``http_status``: answer this HTTP status with an HTML page (no envelope) instead.
    - ``carry_out``: run the request first and answer the scripted error only if it succeeded
      (TikTok did the work, then reported a failure); a request the sandbox refuses gets its own
      refusal and leaves the script pending. False: the request is not run at all.
    - ``times``: how many requests it applies to (``None``: every one, until cleared).
    - ``hold_seconds``: with ``carry_out``, hold the request this long (real time) before running
      it, and run it even if the caller has gone meanwhile, as a server that keeps working
      after the client's timeout does. ``code`` 0 then means "answer as usual".
    """

    endpoint: str
    code: int = 50002
    message: str = "System timeout. Please retry later."
    http_status: int | None = None
    carry_out: bool = True
    times: int | None = 1
    hold_seconds: float = 0.0

    def __post_init__(self) -> None:
        if not self.endpoint:
            raise UsageError("ScriptedAnswer.endpoint must name a path")
        if self.http_status is None and self.code == 0 and not self.hold_seconds:
            raise UsageError("ScriptedAnswer.code must be an error code (0 only with a hold)")
        if not 0.0 <= self.hold_seconds <= 3600.0 or (self.hold_seconds and not self.carry_out):
            raise UsageError("ScriptedAnswer.hold_seconds must be in [0, 3600], with carry_out")
        if self.http_status is not None and not 400 <= self.http_status <= 599:
            raise UsageError("ScriptedAnswer.http_status must be an HTTP error status")
        if self.times is not None and self.times < 1:
            raise UsageError("ScriptedAnswer.times must be >= 1 or None")

    @classmethod
    def from_json(cls, obj: Any) -> ScriptedAnswer:
        if not isinstance(obj, dict):
            raise UsageError("a scripted answer must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(obj) - known)
        if unknown:
            raise UsageError(f"unknown scripted answer option(s): {', '.join(unknown)}")
        return cls(**obj)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def matches(self, path: str) -> bool:
        return path == self.endpoint or path.endswith(self.endpoint)

    @property
    def answers_as_usual(self) -> bool:
        return self.code == 0 and self.http_status is None

    def use(self) -> bool:
        """Count one use; True when the script is now used up."""
        if self.times is None:
            return False
        self.times -= 1
        return self.times <= 0
