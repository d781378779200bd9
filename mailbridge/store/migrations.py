"""Numbered SQL migrations (`sql/NNNN_name.sql`), each applied once, in order.

Each file runs in its own transaction, under a session advisory lock so concurrent
`mailbridge migrate` runs are safe (the second waits, then finds nothing to do).  Every
applied file is recorded with its SHA-256; an applied file whose text changed is a
`MigrationError`, never a silent skip.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from mailbridge.aio.db import close_connection, connect_once
from mailbridge.errors import MigrationError

MIGRATION_LOCK = 0x6D62_0001
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def available_migrations() -> list[Migration]:
    """The migrations shipped in the `sql` package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("sql").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migration files share a version number in sql/")
    return found


CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(dsn: str, migrations: list[Migration] | None = None) -> list[Migration]:
    """Apply every pending migration; returns those applied now (empty when up to date)."""
    migrations = available_migrations() if migrations is None else migrations
    conn = await connect_once(dsn)
    try:
        # Session lock: released when the connection closes, whatever happens below.
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
        await conn.execute(CREATE_LEDGER)
        applied = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
        _check_applied(migrations, applied)
        done: list[Migration] = []
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.checksum,
                )
            done.append(migration)
        return done
    finally:
        await close_connection(conn)


def _check_applied(migrations: list[Migration], applied: dict) -> None:
    known = {m.version: m for m in migrations}
    for version, row in sorted(applied.items()):
        migration = known.get(version)
        if migration is None:
            raise MigrationError(
                f"the database has migration {version:04d}_{row['name']} which this mailbridge does "
                "not know: it was migrated by a newer version; upgrade mailbridge"
            )
        if migration.checksum != row["checksum"]:
            raise MigrationError(
                f"sql/{version:04d}_{migration.name}.sql changed after it was applied; restore it "
                "and put the change in a new numbered migration"
            )


async def pending(dsn: str) -> list[Migration]:
    """Migrations not yet applied (all of them when the ledger does not exist)."""
    conn = await connect_once(dsn)
    try:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        applied = {}
        if exists:
            applied = {r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")}
        migrations = available_migrations()
        _check_applied(migrations, applied)
        return [m for m in migrations if m.version not in applied]
    finally:
        await close_connection(conn)
