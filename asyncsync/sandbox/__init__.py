"""A local emulator of the TikTok Business API audience endpoints (imports no client code)."""

from __future__ import annotations

from asyncsync.sandbox.app import Sandbox
from asyncsync.sandbox.faults import FaultConfig, ScriptedAnswer
from asyncsync.sandbox.state import SandboxClock, SandboxConfig, SandboxState

__all__ = [
    "FaultConfig",
    "Sandbox",
    "SandboxClock",
    "SandboxConfig",
    "SandboxState",
    "ScriptedAnswer",
]
