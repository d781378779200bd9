"""Settings from the environment, validated once at start.

`TUNABLES` is the one table of knobs with the seed's defaults; `.env.example` and the
README's configuration table are checked against it by a test.  A missing or malformed
value raises `ConfigError` with one line naming the variable and the fix; the command
line turns that into exit code 2.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from mailbridge.errors import ConfigError

FERNET_KEY_HINT = (
    "generate one with: python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'"
)


@dataclass(frozen=True, slots=True)
class Tunable:
    """One environment knob: its variable, type, default and meaning."""

    env: str
    attr: str
    kind: type
    default: object
    help: str
    minimum: float | None = None


TUNABLES: tuple[Tunable, ...] = (
    Tunable("MAILBRIDGE_MAX_ACCOUNTS", "max_accounts", int, 20, "accounts synced at most (oldest first)", 1),
    Tunable("MAILBRIDGE_POLL_SECONDS", "poll_seconds", float, 60.0, "seconds between sync cycles", 0.1),
    Tunable("MAILBRIDGE_FOLDERS_PER_TICK", "folders_per_tick", int, 5, "non-priority folders synced per cycle (round robin)", 1),
    Tunable("MAILBRIDGE_STATUS_CHECKS_PER_TICK", "status_checks_per_tick", int, 50, "other folders asked STATUS per cycle to spot changes", 0),
    Tunable("MAILBRIDGE_FLAG_SCAN_HOURS", "flag_scan_hours", float, 6.0, "most hours between flag scans of a non-priority folder (servers without CONDSTORE)", 0),
    Tunable("MAILBRIDGE_FLAG_SCANS_PER_TICK", "flag_scans_per_tick", int, 2, "non-priority flag scans per cycle", 0),
    Tunable("MAILBRIDGE_RECONCILE_HOURS", "reconcile_hours", float, 6.0, "hours between delete reconciles of a folder", 0),
    Tunable("MAILBRIDGE_RECONCILE_JITTER_MINUTES", "reconcile_jitter_minutes", float, 15.0, "random extra delay for reconciles", 0),
    Tunable("MAILBRIDGE_COMMANDS_PER_MINUTE", "commands_per_minute", int, 200, "IMAP commands per minute per account", 1),
    Tunable("MAILBRIDGE_UIDVALIDITY_RESET_LIMIT", "uidvalidity_reset_limit", int, 3, "UIDVALIDITY resets per folder in 24 h before it is parked", 1),
    Tunable("MAILBRIDGE_BATCH_SIZE", "batch_size", int, 2000, "UIDs fetched per batch", 1),
    Tunable("MAILBRIDGE_IMAP_TIMEOUT", "imap_timeout", float, 60.0, "seconds an IMAP command may take", 1),
    Tunable("MAILBRIDGE_CONNECT_TIMEOUT", "connect_timeout", float, 20.0, "seconds to connect and greet", 1),
    Tunable("MAILBRIDGE_IDLE_SECONDS", "idle_seconds", float, 1500.0, "seconds before IDLE is re-issued", 1),
    Tunable("MAILBRIDGE_SAFETY_CYCLE_MINUTES", "safety_cycle_minutes", float, 15.0, "minutes between full cycles where the server pushes changes (NOTIFY); 0: every cycle", 0),
    Tunable("MAILBRIDGE_RETENTION_DAYS", "retention_days", int, None, "keep only messages newer than this many days (unset: all)", 1),
    Tunable("MAILBRIDGE_EVENTS_RETENTION_DAYS", "events_retention_days", int, 30, "days the change log (the events /events streams) is kept", 1),
    Tunable("MAILBRIDGE_BODY_MAX_BYTES", "body_max_bytes", int, 26_214_400, "largest message body served by the API", 1),
    Tunable("MAILBRIDGE_DB_POOL_SIZE", "db_pool_size", int, 10, "pooled Postgres connections per process (all its accounts share them)", 2),
    Tunable("MAILBRIDGE_LOCK_CONNECTIONS", "lock_connections", int, 2, "Postgres connections per process holding its accounts' advisory locks", 1),
    Tunable("MAILBRIDGE_MEMBER_TIMEOUT", "member_timeout", float, 15.0, "seconds without a heartbeat after which a serve process counts as gone (its accounts move)", 3),
    Tunable("MAILBRIDGE_WEBHOOK_TIMEOUT_SECONDS", "webhook_timeout_seconds", float, 10.0, "seconds a webhook receiver may take to answer a delivery", 0.1),
    Tunable("MAILBRIDGE_WEBHOOK_RETRY_HOURS", "webhook_retry_hours", float, 24.0, "hours a failing webhook delivery is retried (exponential backoff) before the webhook is parked", 0),
    Tunable("MAILBRIDGE_MOVE_WINDOW_SECONDS", "move_window_seconds", float, 90.0, "seconds at most that one side of a possible move (a removal; an arrival of a message another folder holds) waits for its other side before it is recorded as a plain message_removed or message_added (a safety net: the actor looks for the other side at once)", 0),
    Tunable("MAILBRIDGE_LOG_LEVEL", "log_level", str, "info", "debug, info, warning or error"),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything mailbridge reads from its environment."""

    database_url: str | None
    home: Path
    encryption_keys: tuple[str, ...]
    api_token: str | None
    port: int | None
    max_accounts: int = 20
    poll_seconds: float = 60.0
    folders_per_tick: int = 5
    status_checks_per_tick: int = 50
    flag_scan_hours: float = 6.0
    flag_scans_per_tick: int = 2
    reconcile_hours: float = 6.0
    reconcile_jitter_minutes: float = 15.0
    commands_per_minute: int = 200
    uidvalidity_reset_limit: int = 3
    batch_size: int = 2000
    imap_timeout: float = 60.0
    connect_timeout: float = 20.0
    idle_seconds: float = 1500.0
    safety_cycle_minutes: float = 15.0
    retention_days: int | None = None
    events_retention_days: int = 30
    body_max_bytes: int = 26_214_400
    db_pool_size: int = 10
    lock_connections: int = 2
    member_timeout: float = 15.0
    log_level: str = "info"
    webhook_timeout_seconds: float = 10.0
    webhook_retry_hours: float = 24.0
    move_window_seconds: float = 90.0
    key_source: str = field(default="env")

    def __repr__(self) -> str:
        """Every setting, secrets hidden: the API token and the keys as ``***``, the
        database URL without its password (logs and tracebacks show reprs)."""
        shown: list[str] = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "api_token" and value is not None:
                text = "'***'"
            elif name == "encryption_keys":
                text = f"<{len(value)} key{'s' if len(value) != 1 else ''}>"
            elif name == "database_url" and value is not None:
                parts = urlsplit(value)
                netloc = parts.netloc.rpartition("@")
                user = netloc[0].partition(":")[0] + ":***@" if ":" in netloc[0] else netloc[0] + netloc[1]
                query = "&".join("password=***" if q.lower().startswith("password=") else q
                                 for q in parts.query.split("&")) if parts.query else ""
                text = repr(parts._replace(netloc=user + netloc[2], query=query).geturl())
            else:
                text = repr(value)
            shown.append(f"{name}={text}")
        return f"Settings({', '.join(shown)})"

    @property
    def embedded(self) -> bool:
        """True when no DATABASE_URL is given and the embedded Postgres is used."""
        return self.database_url is None

    def require_keys(self) -> tuple[str, ...]:
        """The Fernet keys, newest first; ConfigError when none is configured."""
        if not self.encryption_keys:
            raise ConfigError(
                "MAILBRIDGE_ENCRYPTION_KEY is not set: it encrypts stored IMAP passwords; "
                + FERNET_KEY_HINT
            )
        return self.encryption_keys


def _parse_value(tunable: Tunable, raw: str) -> object:
    raw = raw.strip()
    if tunable.kind is str:
        return raw
    try:
        value = tunable.kind(raw)
    except ValueError:
        kind = "a whole number" if tunable.kind is int else "a number"
        raise ConfigError(f"{tunable.env}={raw!r} is not {kind}: {tunable.help}") from None
    if tunable.minimum is not None and value < tunable.minimum:
        raise ConfigError(f"{tunable.env}={raw} is too small: it must be at least {tunable.minimum:g}")
    return value


def check_database_url(url: str, variable: str = "DATABASE_URL") -> str:
    """Validate a Postgres URL's shape; returns it unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql"):
        raise ConfigError(
            f"{variable} must be a postgresql:// URL (got scheme {parts.scheme or 'none'!r}), "
            "e.g. postgresql://user:password@localhost:5432/mailbridge"
        )
    try:
        parts.port
    except ValueError:
        raise ConfigError(f"{variable} has an invalid port: use host:5432") from None
    return url


def _check_fernet_key(key: str, variable: str) -> str:
    import base64
    import binascii

    try:
        raw = base64.urlsafe_b64decode(key.encode("ascii"))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raw = b""
    if len(key) != 44 or len(raw) != 32:
        raise ConfigError(
            f"{variable} holds a value that is not a Fernet key (44 characters of URL-safe "
            f"base64); {FERNET_KEY_HINT}"
        )
    return key


def load_dotenv_file(path: Path, environ: dict[str, str]) -> None:
    """Copy variables from a .env file into `environ`, never overriding set ones."""
    if not path.is_file():
        return
    from dotenv import dotenv_values

    for key, value in dotenv_values(path).items():
        if value is not None and key not in environ:
            environ[key] = value


def load_settings(
    environ: Mapping[str, str] | None = None,
    *,
    dotenv: Path | None = Path(".env"),
    key_file_factory: Callable[[Path], str] | None = None,
) -> Settings:
    """Read and validate the environment (plus `.env` when present).

    Raises ConfigError on the first invalid value.  In embedded mode (no DATABASE_URL)
    and without a configured key, the key file under MAILBRIDGE_HOME is read or created
    (mode 0600).
    """
    env = dict(os.environ if environ is None else environ)
    if dotenv is not None:
        load_dotenv_file(dotenv, env)

    database_url = env.get("DATABASE_URL", "").strip() or None
    if database_url:
        check_database_url(database_url)
    home = Path(env.get("MAILBRIDGE_HOME", "").strip() or "~/.local/share/mailbridge").expanduser()

    raw_keys = env.get("MAILBRIDGE_ENCRYPTION_KEY", "").strip()
    key_var = "MAILBRIDGE_ENCRYPTION_KEY"
    if not raw_keys and env.get("IMAP_ENCRYPTION_KEY", "").strip():
        raw_keys, key_var = env["IMAP_ENCRYPTION_KEY"].strip(), "IMAP_ENCRYPTION_KEY"
    keys = tuple(_check_fernet_key(k.strip(), key_var) for k in raw_keys.split(",") if k.strip())
    key_source = "env"
    if not keys and database_url is None:
        factory = key_file_factory or ensure_key_file
        keys = (factory(home),)
        key_source = "file"

    port = None
    if env.get("PORT", "").strip():
        raw = env["PORT"].strip()
        if not raw.isdigit() or not 0 < int(raw) < 65536:
            raise ConfigError(f"PORT={raw!r} is not a TCP port: use a number from 1 to 65535")
        port = int(raw)

    values: dict[str, object] = {}
    for tunable in TUNABLES:
        raw = env.get(tunable.env, "")
        values[tunable.attr] = _parse_value(tunable, raw) if raw.strip() else tunable.default
    if values["log_level"] not in ("debug", "info", "warning", "error"):
        raise ConfigError(
            f"MAILBRIDGE_LOG_LEVEL={values['log_level']!r} is not a level: use debug, info, warning or error"
        )

    return Settings(
        database_url=database_url,
        home=home,
        encryption_keys=keys,
        api_token=env.get("MAILBRIDGE_API_TOKEN", "").strip() or None,
        port=port,
        key_source=key_source,
        **values,  # type: ignore[arg-type]
    )


def ensure_key_file(home: Path) -> str:
    """Read `home/encryption.key`, creating it (mode 0600) with a new key if missing.

    Safe when several processes start at once: the key is written in full to a private
    temporary file, which is then linked to its name only if none exists yet (`os.link`
    never replaces), so every process reads the same complete key and none sees a
    partial file.
    """
    from cryptography.fernet import Fernet

    path = home / "encryption.key"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        _create_key_file(path, Fernet.generate_key().decode())
    return _check_fernet_key(path.read_text().strip(), str(path))


def _create_key_file(path: Path, key: str) -> None:
    """Put `key` at `path` (0600) unless a file is already there; never a partial file."""
    import tempfile

    fd, temp = tempfile.mkstemp(prefix=".encryption.key.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            pass  # another process won the race: its key is the key
        except OSError as exc:  # a file system without hard links
            raise ConfigError(f"cannot create the key file {path} ({exc.strerror}): set "
                              f"MAILBRIDGE_ENCRYPTION_KEY instead; {FERNET_KEY_HINT}") from None
    finally:
        os.unlink(temp)
