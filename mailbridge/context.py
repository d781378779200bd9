"""What every command receives: the validated settings and the database to use."""

from __future__ import annotations

from dataclasses import dataclass

from mailbridge.config import Settings


@dataclass(frozen=True, slots=True)
class Context:
    """One command's run: `settings` from the environment and `dsn`, the Postgres to
    connect to (DATABASE_URL's or the embedded server's; empty for commands without a
    database)."""

    settings: Settings
    dsn: str


__all__ = ["Context"]
