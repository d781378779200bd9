"""What every store function takes as its first argument, and the statements that
belong to no table.

`Db` is the pool or one connection (a statement on the pool runs on its own, in one
implicit transaction); `Tx` is a connection inside the caller's transaction, for the
functions whose writes must commit together with the caller's other writes.  `Row` is one
row a statement returned (read by column name).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TypeAlias

from mailbridge.aio.db import Connection, Database, Record

Db: TypeAlias = Database | Connection
Tx: TypeAlias = Connection
Row: TypeAlias = Record


@asynccontextmanager
async def read_only(db: Db) -> AsyncIterator[Tx]:
    """A READ ONLY transaction for the block: any write in it fails.  Cancelled or
    failed, it rolls back (see `mailbridge.aio.db`)."""
    async with db.transaction() as tx:
        await tx.execute("SET TRANSACTION READ ONLY")
        yield tx


async def server_version(db: Db) -> str:
    """The Postgres server's version, as it states it."""
    return str(await db.fetchval("SHOW server_version"))


__all__ = ["Db", "Row", "Tx", "read_only", "server_version"]
