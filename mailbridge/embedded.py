"""The embedded Postgres used when DATABASE_URL is unset (the `pgserver` package).

The data directory lives under MAILBRIDGE_HOME/pgdata and is reused across runs; the
server is shared by concurrent mailbridge processes and stopped when the last one exits.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

from mailbridge.errors import ConfigError, DatabaseUnavailable

DATABASE_NAME = "mailbridge"


def start_embedded(home: Path, database: str = DATABASE_NAME) -> str:
    """Start (or join) the embedded server and return a DSN for `database`.

    Blocking; call before entering trio.  Raises DatabaseUnavailable when it cannot start.
    """
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    try:
        import pgserver
    except ImportError:  # pragma: no cover - a dependency
        raise ConfigError("DATABASE_URL is not set and the pgserver package is missing: pip install pgserver") from None
    pgdata = home / "pgdata"
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
    except Exception as exc:  # pgserver raises plain subprocess/OS errors
        raise DatabaseUnavailable(
            f"the embedded Postgres under {pgdata} did not start ({type(exc).__name__}: {exc}); "
            f"see {pgdata / 'log'}, or set DATABASE_URL to use your own Postgres"
        ) from None
    return server.get_uri(database)
