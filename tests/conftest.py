"""Shared fixtures: a real Postgres and a real Dovecot, never mocks.

Postgres: the server DATABASE_URL_TEST points to (with the seed's rails: no host
containing "prod", no pooler, not port 6543), or, when unset, an embedded Postgres the
suite starts.  Each test that asks for `db_dsn` gets a fresh database named `…_test`,
cloned from a migrated template, dropped afterwards.

Dovecot: one private server for the session on free loopback ports with its own
config, and a fresh user per test (`mail_user`).
"""

from __future__ import annotations

import inspect
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

import pytest

from mailbridge.aio.db import execute_once, with_database
from mailbridge.aio.loop import run as run_with_loop
from tests.support.dovecot import running_dovecot

REPO = Path(__file__).resolve().parent.parent


# --- every async test runs under trio with the asyncio seam's loop open ---------------


def pytest_collection_modifyitems(config, items):
    for item in items:
        fn = getattr(item, "obj", None)
        if fn is None:
            continue
        inner = fn.hypothesis.inner_test if hasattr(fn, "hypothesis") else fn
        if inspect.iscoroutinefunction(inner) and item.get_closest_marker("trio") is None:
            item.add_marker(pytest.mark.trio(run=run_with_loop))


# --- Postgres ---------------------------------------------------------------------------


def refuse_unsafe_test_url(url: str) -> None:
    """The seed's rails: tests never touch production or a transaction pooler."""
    parts = urlsplit(url)
    host = (parts.hostname or "") + (parts.query or "")
    if "prod" in host.lower():
        pytest.exit(f"DATABASE_URL_TEST host looks like production ({parts.hostname}); refusing", 2)
    if parts.port == 6543 or "pooler" in host.lower() or "pgbouncer" in host.lower():
        pytest.exit("DATABASE_URL_TEST points at a transaction pooler (port 6543); use a direct connection", 2)


def _run(fn, *args):
    return run_with_loop(fn, *args)


@pytest.fixture(scope="session")
def pg_server_dsn(tmp_path_factory) -> Iterator[str]:
    """A DSN to a maintenance database on the test Postgres server."""
    url = os.environ.get("DATABASE_URL_TEST", "").strip()
    if url:
        refuse_unsafe_test_url(url)
        yield url
        return
    from mailbridge.embedded import start_embedded

    base = Path(tempfile.mkdtemp(prefix="mbpg-"))
    dsn = start_embedded(base, database="mailbridge_test")
    yield dsn
    import pgserver

    pgserver.get_server(base / "pgdata").cleanup()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_server_dsn: str) -> Iterator[str]:
    """A migrated template database; per-test databases are cloned from it."""
    from mailbridge.store.migrations import migrate

    name = f"mb_tmpl_{secrets.token_hex(4)}_test"
    _run(execute_once, pg_server_dsn, f'CREATE DATABASE "{name}"')
    try:
        _run(migrate, with_database(pg_server_dsn, name))
        yield name
    finally:
        _run(execute_once, pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fresh_database(pg_server_dsn: str, template: str | None = None) -> Iterator[str]:
    """A new database (a copy of `template`, else empty) for a fixture's life, then dropped."""
    name = f"mb_{secrets.token_hex(6)}_test"
    copy_of = f' TEMPLATE "{template}"' if template else ""
    _run(execute_once, pg_server_dsn, f'CREATE DATABASE "{name}"{copy_of}')
    try:
        yield with_database(pg_server_dsn, name)
    finally:
        _run(execute_once, pg_server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_dsn(pg_server_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    yield from _fresh_database(pg_server_dsn, template_db)


@pytest.fixture
def empty_db_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A fresh database with no schema at all (for migration tests)."""
    yield from _fresh_database(pg_server_dsn)


@pytest.fixture
async def db(db_dsn: str):
    """A connection pool on the test's fresh database."""
    from mailbridge.aio.db import Database

    async with Database.connect(db_dsn, max_size=4) as database:
        yield database


# --- Dovecot ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory):
    """One private Dovecot for the session (plain+STARTTLS port and an implicit-TLS port)."""
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot"))


@pytest.fixture
def mail_user(dovecot):
    """A fresh IMAP user with an empty mailbox."""
    return dovecot.add_user()


@pytest.fixture
def encryption_key() -> str:
    from mailbridge.secrets import generate_key

    return generate_key()
