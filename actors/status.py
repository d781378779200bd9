"""Immutable status snapshots that actors publish and `/actors` reads.

A snapshot is replaced, never mutated, so a reader never waits on an actor and never
sees half an update.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

# Actor states (what the actor is doing; the account's health is a separate field)
STARTING = "starting"      # spawned, taking the lock
STANDBY = "standby"        # another process holds the lock; retrying
CONNECTING = "connecting"  # lock held, logging in
SYNCING = "syncing"        # running a cycle
IDLE = "idle"              # between cycles, waiting for the next tick or a request
BACKOFF = "backoff"        # crashed; the supervisor restarts it at `retry_at`
PARKED = "parked"          # waiting for something to change (new credentials)
STOPPED = "stopped"        # not running: disabled or over the account limit
STATES = (STARTING, STANDBY, CONNECTING, SYNCING, IDLE, BACKOFF, PARKED, STOPPED)


def _now() -> datetime:
    return datetime.now(timezone.utc)


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

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in self.__slots__:  # type: ignore[attr-defined]
            value = getattr(self, key)
            if isinstance(value, datetime):
                value = value.isoformat()
            elif key == "folders":
                value = [{"name": p.name, "phase": p.phase, "synced": p.synced, "total": p.total,
                          "synced_at": p.synced_at.isoformat() if p.synced_at else None} for p in value]
            out[key] = value
        return out


__all__ = ["ActorStatus", "FolderProgress", "STATES", "BACKOFF", "CONNECTING", "IDLE", "PARKED",
           "STANDBY", "STARTING", "STOPPED", "SYNCING"]
