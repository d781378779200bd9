"""Immutable status snapshots that actors publish and `/actors` reads.

A snapshot is replaced, never mutated, so a reader never waits on an actor and never
sees half an update.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from mailbridge.errors import MailbridgeError

# Actor states (what the actor is doing; the account's health is a separate field)
STARTING = "starting"      # spawned, taking the lock
STANDBY = "standby"        # another process holds the lock; retrying
CONNECTING = "connecting"  # lock held, logging in
SYNCING = "syncing"        # running a cycle
IDLE = "idle"              # between cycles, waiting for the next tick or a request
BACKOFF = "backoff"        # crashed; the supervisor restarts it at `retry_at`
PARKED = "parked"          # waiting for something to change (new credentials)
STOPPED = "stopped"        # not running: disabled or over the account limit
ELSEWHERE = "elsewhere"    # another serve process's share: it syncs the account (see `owner`)
STATES = (STARTING, STANDBY, CONNECTING, SYNCING, IDLE, BACKOFF, PARKED, STOPPED, ELSEWHERE)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def describe_error(exc: BaseException) -> str:
    """An error as `last_error` and the logs show it: our errors by their message (it says
    what and how to fix it), anything else with its type name in front."""
    text = str(exc)
    if isinstance(exc, MailbridgeError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(frozen=True, slots=True)
class FolderProgress:
    """How far one folder's sync is."""

    name: str
    phase: str         # select, initial, incremental, reconcile, done, parked, gone, ...
    synced: int        # rows mirrored
    total: int | None  # messages on the server (EXISTS)
    synced_at: datetime | None = None  # when it was last brought fully up to date


@dataclass(frozen=True, slots=True)
class ActorStatus:
    """One account's actor, as of `updated_at`."""

    account_id: int
    email: str
    state: str
    health: str
    health_reason: str | None = None
    step: str = ""                      # what it is doing now, for people
    folder: str | None = None           # the folder being synced
    folders: tuple[FolderProgress, ...] = ()
    lock_held: bool = False
    owner: str | None = None            # host:pid of the process syncing it (None: unowned)
    restarts: int = 0
    last_error: str | None = None
    mailbox_depth: int = 0
    commands: int = 0                   # IMAP commands sent by this actor's session
    throttle_waits: int = 0
    cycles: int = 0
    retry_at: datetime | None = None    # backoff: when the next start is due
    next_cycle_at: datetime | None = None
    started_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)

    def evolve(self, **changes: Any) -> "ActorStatus":
        """A new snapshot with `changes` and a fresh `updated_at`."""
        changes.setdefault("updated_at", _now())
        return replace(self, **changes)

    def with_folder(self, progress: FolderProgress) -> "ActorStatus":
        """A new snapshot with one folder's progress replaced (or added)."""
        others = tuple(p for p in self.folders if p.name != progress.name)
        return self.evolve(folder=progress.name, folders=tuple(sorted(others + (progress,), key=lambda p: p.name)))

    def after_step(self, folder: str, phase: str, synced: int, total: int | None) -> "ActorStatus":
        """A new snapshot with a folder's progress after one sync step: a step that does not
        say how many rows are mirrored keeps the last count; `synced_at` moves on 'done'."""
        previous = next((p for p in self.folders if p.name == folder), None)
        if phase != "done" and not synced:
            synced = previous.synced if previous else 0
        synced_at = _now() if phase == "done" else (previous.synced_at if previous else None)
        return self.with_folder(FolderProgress(folder, phase, synced, total, synced_at))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.__slots__:
            value = getattr(self, key)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif key == "folders":
                value = [{"name": p.name, "phase": p.phase, "synced": p.synced, "total": p.total,
                          "synced_at": p.synced_at.isoformat() if p.synced_at else None} for p in value]
            out[key] = value
        return out


__all__ = ["ActorStatus", "FolderProgress", "describe_error", "STATES", "BACKOFF", "CONNECTING", "ELSEWHERE",
           "IDLE", "PARKED",
           "STANDBY", "STARTING", "STOPPED", "SYNCING"]
