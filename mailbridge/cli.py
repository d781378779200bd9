"""The `mailbridge` command line.

Exit codes: 0 success; 1 the operation failed (wrong password, unreachable host, drift
found, ...); 2 bad configuration or usage.  Errors are one line on stderr, never a
traceback (set MAILBRIDGE_LOG_LEVEL=debug to see one).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from typing import Any, Awaitable, Callable

from mailbridge import __version__, demo, runtime
from mailbridge.config import Settings, load_settings
from mailbridge.context import Context
from mailbridge.errors import ConfigError, InvalidInput, MailbridgeError

log = logging.getLogger("mailbridge")


class UsageError(MailbridgeError):
    """Wrong command-line use (exit 2)."""


# --- commands -------------------------------------------------------------------------


async def cmd_migrate(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.store.migrations import migrate

    applied = await migrate(ctx.dsn)
    if not applied:
        print("schema is up to date; nothing to apply")
    for m in applied:
        print(f"applied {m.version:04d}_{m.name}")
    return 0


async def cmd_preflight(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.preflight import run_preflight

    checks = await run_preflight(ctx.settings, ctx.dsn, production=args.production)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'} {check.name:<15} {check.detail}")
    return 0 if all(c.ok for c in checks) else 1


def _prompt(label: str, default: str | None = None) -> str:
    suffix = f" [{default}]" if default else ""
    value = input(f"{label}{suffix}: ").strip()
    return value or (default or "")


def _read_password(args: argparse.Namespace, interactive: bool) -> str:
    if args.password_stdin:
        line = sys.stdin.readline()
        return line.rstrip("\r\n")
    if interactive:
        return getpass.getpass("IMAP password (hidden): ")
    raise UsageError("no password given: pass --password-stdin and write it to standard input")


def _is_interactive(args: argparse.Namespace) -> bool:
    """`accounts add` asks for what is missing: on a terminal, unless --password-stdin."""
    return sys.stdin.isatty() and not args.password_stdin and not getattr(args, "oauth2", None)


def _given_fields(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "email": args.email, "host": args.host, "port": args.port, "tls": args.tls,
        "username": args.username, "verify_certificate": not args.insecure_skip_verify,
    }


def check_accounts_add(args: argparse.Namespace) -> None:
    """Without a terminal, the arguments alone must describe the account: UsageError
    (exit 2) for a missing --email, --host or --password-stdin, InvalidInput (exit 1) for
    a malformed field.  Runs before anything is read or written."""
    if _is_interactive(args):
        return
    from mailbridge.accountops import validate

    fields = _given_fields(args)
    missing = [f"--{k}" for k in ("email", "host") if not fields[k]]
    if missing:
        raise UsageError(f"missing {', '.join(missing)} (or run `mailbridge accounts add` on a terminal)")
    if args.oauth2 and not args.refresh_token_stdin:
        raise UsageError("--oauth2 needs --refresh-token-stdin (the refresh token on standard input)")
    if not args.password_stdin and not args.oauth2:
        raise UsageError("no password given: pass --password-stdin and write it to standard input")
    validate(fields)


async def cmd_accounts_add(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.accountops import DEFAULT_PORTS, add_account, validate
    from mailbridge.aio.db import Database

    fields = _given_fields(args)
    interactive = _is_interactive(args)
    if interactive:
        fields["email"] = fields["email"] or _prompt("Email address")
        fields["host"] = fields["host"] or _prompt("IMAP host", _guess_host(fields["email"]))
        fields["tls"] = fields["tls"] or _prompt("TLS (tls, starttls, none)", "tls")
        fields["port"] = fields["port"] or _prompt("IMAP port", str(DEFAULT_PORTS.get(fields["tls"], 993)))
        fields["username"] = fields["username"] or _prompt("IMAP username", fields["email"])
    new = validate(fields)
    if args.oauth2:
        from mailbridge.accountops import add_oauth2_account

        refresh_token = sys.stdin.readline().rstrip("\r\n")
        print(f"refreshing with OAuth2 client {args.oauth2!r} and testing sign-in to {new.imap_host}:"
              f"{new.imap_port} ({new.imap_tls}) as {new.imap_username} ...", flush=True)
        async with Database.connect(ctx.dsn, max_size=2) as db:
            account_id = await add_oauth2_account(db, ctx.settings, new, args.oauth2, refresh_token)
        print(f"sign-in ok; added account {account_id} ({new.email})")
        print(account_id)
        return 0
    password = _read_password(args, interactive)
    print(f"testing login to {new.imap_host}:{new.imap_port} ({new.imap_tls}) as {new.imap_username} ...",
          flush=True)
    async with Database.connect(ctx.dsn, max_size=2) as db:
        account_id = await add_account(db, ctx.settings, new, password)
    print(f"login ok; added account {account_id} ({new.email})")
    print(account_id)
    return 0


def check_accounts_authorize(args: argparse.Namespace) -> None:
    """`accounts authorize`: --timeout and --redirect-port make sense, and the account's
    fields (when --host says it is a new one) are well formed, before anything starts."""
    if args.timeout <= 0:
        raise UsageError("--timeout must be a positive number of seconds")
    if args.redirect_port is not None and not 0 <= args.redirect_port <= 65535:
        raise UsageError("--redirect-port must be from 0 to 65535 (0: a free one)")
    if args.host:
        from mailbridge.accountops import validate

        validate(_given_fields(args))


async def cmd_accounts_authorize(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.accountops import check_room, renew_oauth2_account, save_oauth2_account, validate
    from mailbridge.aio.db import Database
    from mailbridge.oauth2.authorize import authorize
    from mailbridge.store import accounts as account_store
    from mailbridge.store import oauth2 as oauth2_store

    def show(url: str, redirect_uri: str) -> None:
        print(f"open this address in a browser and sign in (mailbridge waits up to {args.timeout:g} s "
              f"for the redirect to {redirect_uri}):", flush=True)
        print(url, flush=True)

    async with Database.connect(ctx.dsn, max_size=2) as db:
        await oauth2_store.get_client(db, args.oauth2)  # an unknown client before anything else
        existing = await account_store.find_by_email(db, args.email.strip(), args.host)
        if len(existing) > 1:
            raise UsageError(f"{len(existing)} accounts have the address {args.email}: give --host to say which")
        account = existing[0] if existing else None
        if account is None:
            if not args.host:
                raise UsageError(f"no account has the address {args.email}: give --host (and --port, --tls, "
                                 "--username as needed) to add one")
            new = validate(_given_fields(args))
            await check_room(db, ctx.settings)
        grant = await authorize(db, ctx.settings, args.oauth2, port=args.redirect_port or 0, timeout=args.timeout,
                                redirect_host=args.redirect_host,
                                login_hint=account.imap_username if account else new.imap_username, show=show)
        if account is not None:
            print(f"authorized; testing sign-in to {account.imap_host}:{account.imap_port} ({account.imap_tls}) "
                  f"as {account.imap_username} ...", flush=True)
            await renew_oauth2_account(db, ctx.settings, account, grant)
            print(f"sign-in ok; account {account.id} ({account.email}) signs in through OAuth2 client "
                  f"{grant.client.name!r} with its new tokens")
            print(account.id)
            return 0
        print(f"authorized; testing sign-in to {new.imap_host}:{new.imap_port} ({new.imap_tls}) as "
              f"{new.imap_username} ...", flush=True)
        account_id = await save_oauth2_account(db, ctx.settings, new, grant)
    print(f"sign-in ok; added account {account_id} ({new.email})")
    print(account_id)
    return 0


def check_accounts_update(args: argparse.Namespace) -> None:
    if args.refresh_token_stdin == args.password_stdin:
        raise UsageError("give --refresh-token-stdin (with --oauth2 NAME to change the client) or "
                         "--password-stdin, and write the new secret to standard input")
    if args.oauth2 and not args.refresh_token_stdin:
        raise UsageError("--oauth2 needs --refresh-token-stdin (the refresh token on standard input)")


async def cmd_accounts_update(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.accountops import endpoint_of, test_login, update_oauth2_token
    from mailbridge.aio.db import Database
    from mailbridge.secrets import Cipher
    from mailbridge.store import accounts as account_store
    from mailbridge.store import api as api_store
    from mailbridge.store import oauth2 as oauth2_store

    secret = sys.stdin.readline().rstrip("\r\n")
    async with Database.connect(ctx.dsn, max_size=2) as db:
        account = await account_store.get(db, args.id)
        if args.refresh_token_stdin:
            print(f"refreshing with OAuth2 client {args.oauth2 or account.oauth2_client or '?'!r} and testing "
                  f"sign-in to {account.imap_host}:{account.imap_port} as {account.imap_username} ...", flush=True)
            account = await update_oauth2_token(db, ctx.settings, args.id, secret, args.oauth2)
        else:
            if not secret:
                raise InvalidInput("invalid account: password: must not be empty", {"password": "must not be empty"})
            print(f"testing login to {account.imap_host}:{account.imap_port} as {account.imap_username} ...",
                  flush=True)
            await test_login(endpoint_of(account), secret, ctx.settings)
            async with db.transaction() as tx:
                await oauth2_store.clear_account_oauth2(tx, args.id)
                account = await api_store.update_account(
                    tx, args.id, {}, password_encrypted=Cipher(ctx.settings.require_keys()).encrypt(secret))
    print(f"sign-in ok; account {account.id} ({account.email}) has its new credentials; its actor restarts")
    return 0


def _guess_host(email: str) -> str | None:
    domain = email.partition("@")[2].lower()
    known = {"gmail.com": "imap.gmail.com", "googlemail.com": "imap.gmail.com",
             "outlook.com": "outlook.office365.com", "hotmail.com": "outlook.office365.com",
             "yahoo.com": "imap.mail.yahoo.com", "icloud.com": "imap.mail.me.com",
             "fastmail.com": "imap.fastmail.com"}
    return known.get(domain) or (f"imap.{domain}" if domain else None)


async def cmd_accounts_list(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import accounts as account_store

    async with Database.connect(ctx.dsn, max_size=2) as db:
        accounts = await account_store.list_all(db)
    if args.json:
        print(json.dumps([a.to_json() for a in accounts], indent=2))
        return 0
    if not accounts:
        print("no accounts yet: add one with `mailbridge accounts add`")
        return 0
    print(f"{'ID':>4}  {'EMAIL':<32} {'SERVER':<32} {'HEALTH':<12} {'OWNER':<20} REASON")
    for a in accounts:
        server = f"{a.imap_host}:{a.imap_port}/{a.imap_tls}"
        health = a.health if a.enabled else "disabled"
        print(f"{a.id:>4}  {a.email:<32} {server:<32} {health:<12} {a.owner or '-':<20} {a.health_reason or ''}")
    return 0


async def cmd_accounts_show(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import accounts as account_store
    from mailbridge.store import folders as folder_store
    from mailbridge.sync.folder import REPAIR_INTERVAL

    async with Database.connect(ctx.dsn, max_size=2) as db:
        account = await account_store.get(db, args.id)
        folders = await folder_store.overview(db, args.id)
    if args.json:
        out = account.to_json()
        out["folders"] = [
            {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(f).items()} for f in folders
        ]
        print(json.dumps(out, indent=2))
        return 0
    print(f"account {account.id}: {account.email}")
    print(f"  server   {account.imap_host}:{account.imap_port} ({account.imap_tls}) as {account.imap_username}")
    print(f"  sign-in  {'OAuth2 through client ' + repr(account.oauth2_client) if account.auth_kind == 'oauth2' else 'password'}")
    print(f"  health   {account.health if account.enabled else 'disabled'}"
          f"{' - ' + account.health_reason if account.health_reason else ''}")
    print(f"  owner    {account.owner or '-'} (heartbeat {account.heartbeat_at or '-'})")
    if not folders:
        print("  folders  none discovered yet")
    for f in folders:
        state = "excluded" if f["excluded"] else "parked" if f["parked"] else (
            "synced" if f["initial_sync_complete"] else "initial sync")
        if not f["exists_on_server"]:
            state = "gone from server"
        count = f"{f['message_count']}/{f['server_message_count'] if f['server_message_count'] is not None else '?'}"
        mark = "*" if f["is_priority"] else " "
        print(f"  {mark} {f['name']:<40} {state:<14} {count:>14}  last sync {f['last_synced_at'] or '-'}")
        if f["parked"] and f["parked_reason"]:
            print(f"      parked: {f['parked_reason']}")
        if f["unreadable"]:
            print(f"      {f['unreadable']} message(s) with unreadable metadata (fetched again every "
                  f"{int(REPAIR_INTERVAL.total_seconds() // 60)} min until the server's answer parses)")
    return 0


async def cmd_accounts_remove(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import accounts as account_store

    async with Database.connect(ctx.dsn, max_size=2) as db:
        account = await account_store.get(db, args.id)
        await account_store.delete(db, args.id)
    print(f"removed account {account.id} ({account.email}) and its mirrored messages")
    return 0


async def cmd_accounts_test(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.accountops import endpoint_of, test_login
    from mailbridge.aio.db import Database
    from mailbridge.store import accounts as account_store

    from mailbridge.oauth2.signin import stored_credential

    async with Database.connect(ctx.dsn, max_size=2) as db:
        account = await account_store.get(db, args.id)
        credential = await stored_credential(db, ctx.settings, account)  # password or OAuth2 token
    endpoint = endpoint_of(account)
    print(f"testing login to {endpoint.describe()} as {account.imap_username} ...", flush=True)
    report = await test_login(endpoint, credential, ctx.settings)
    wanted = ("IDLE", "CONDSTORE", "QRESYNC", "SPECIAL-USE", "MOVE", "UIDPLUS")
    offered = [c for c in wanted if c in report.capabilities]
    print(f"login ok; server offers {', '.join(offered) or 'none of ' + ', '.join(wanted)}")
    return 0


async def cmd_accounts_reset(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import accounts as account_store
    from mailbridge.store import folders as folder_store

    async with Database.connect(ctx.dsn, max_size=2) as db:
        await account_store.get(db, args.id)
        n = await folder_store.reset_sync_state(db, args.id, args.folder)
    what = f"folder {args.folder!r}" if args.folder else f"{n} folder(s)"
    if args.folder and n == 0:
        raise InvalidInput(f"account {args.id} has no folder named {args.folder!r}: see `mailbridge accounts show {args.id}`")
    print(f"forgot the sync state of {what} of account {args.id}; the next cycle re-syncs")
    return 0


async def cmd_keys_rotate(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.accountops import rotate_keys
    from mailbridge.aio.db import Database

    async with Database.connect(ctx.dsn, max_size=2) as db:
        n = await rotate_keys(db, ctx.settings)
    print(f"re-encrypted {n} password(s) under the newest key; older keys can now be removed "
          "from MAILBRIDGE_ENCRYPTION_KEY")
    return 0


async def cmd_keys_generate(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.secrets import generate_key

    print(generate_key())
    return 0


# --- wiring ---------------------------------------------------------------------------

Handler = Callable[[Context, argparse.Namespace], Awaitable[int]]
ArgumentCheck = Callable[[argparse.Namespace], None]


def _no_check(args: argparse.Namespace) -> None:
    """Commands whose arguments argparse checks completely."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mailbridge",
        description="Mirror email metadata from IMAP into Postgres and keep it true.",
    )
    parser.add_argument("--version", action="version", version=f"mailbridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def command(name: str, handler: Handler | None, help: str,
                parent: argparse._SubParsersAction[argparse.ArgumentParser] = sub,
                **kw: Any) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help, **kw)
        p.set_defaults(handler=handler, needs_db=True, check=_no_check)
        return p

    p = command("serve", runtime.cmd_serve, "run the sync engine and the HTTP API in one process")
    p.add_argument("--bind", metavar="HOST:PORT", help="listen address (default 127.0.0.1:$PORT or 8025)")
    command("migrate", cmd_migrate, "apply pending database migrations")
    p = command("preflight", cmd_preflight, "check environment, database, schema, locks and accounts")
    p.add_argument("--production", action="store_true", help="also require at least one account")

    accounts = sub.add_parser("accounts", help="add, authorize, update, list, show, test, reset and remove accounts",
                              description="manage IMAP accounts")
    acc = accounts.add_subparsers(dest="accounts_command", metavar="ACTION")
    acc.required = True
    p = command("add", cmd_accounts_add, "add an account (tests the login before saving; prints the new id last)", acc)
    p.add_argument("--email")
    p.add_argument("--host", help="IMAP server host name")
    p.add_argument("--port", type=int, help="IMAP port (default 993 for tls, 143 otherwise)")
    p.add_argument("--tls", choices=("tls", "starttls", "none"), help="transport security (default tls)")
    p.add_argument("--username", help="login name (default: the email address)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--oauth2", metavar="CLIENT", help="sign in with OAuth2 through this client (oauth2 add)")
    p.add_argument("--refresh-token-stdin", action="store_true",
                   help="with --oauth2: read the refresh token from standard input")
    p.add_argument("--insecure-skip-verify", action="store_true",
                   help="do not verify the server's TLS certificate (self-signed test servers only)")
    p.set_defaults(check=check_accounts_add)
    p = command("authorize", cmd_accounts_authorize,
                "sign in with OAuth2 in a browser (authorization code with PKCE, a loopback redirect) and "
                "add the account, or give an existing one (same --email) new tokens; prints the id last", acc)
    p.add_argument("--oauth2", metavar="CLIENT", required=True, help="the OAuth2 client (oauth2 add)")
    p.add_argument("--email", required=True)
    p.add_argument("--host", help="IMAP server host name (a new account; an existing one keeps its own)")
    p.add_argument("--port", type=int, help="IMAP port (default 993 for tls, 143 otherwise)")
    p.add_argument("--tls", choices=("tls", "starttls", "none"), help="transport security (default tls)")
    p.add_argument("--username", help="login name (default: the email address)")
    p.add_argument("--insecure-skip-verify", action="store_true",
                   help="do not verify the server's TLS certificate (self-signed test servers only)")
    p.add_argument("--redirect-port", type=int, metavar="PORT",
                   help="listen for the redirect on 127.0.0.1:PORT (default: a free port)")
    p.add_argument("--redirect-host", choices=("127.0.0.1", "localhost"), default="127.0.0.1",
                   help="the host the redirect URI names (default 127.0.0.1; localhost for a client "
                        "registered with http://localhost); the listener is on 127.0.0.1 either way")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                   help="how long to wait for the browser's redirect (default 300)")
    p.set_defaults(check=check_accounts_authorize)
    p = command("update", cmd_accounts_update,
                "give an account new credentials from standard input (tested first); its actor restarts", acc)
    p.add_argument("id", type=int)
    p.add_argument("--refresh-token-stdin", action="store_true",
                   help="a new OAuth2 refresh token (for an OAuth2 account, or with --oauth2)")
    p.add_argument("--oauth2", metavar="CLIENT", help="with --refresh-token-stdin: sign in through this client")
    p.add_argument("--password-stdin", action="store_true",
                   help="a new password (an OAuth2 account signs in with it from now on)")
    p.set_defaults(check=check_accounts_update)
    p = command("list", cmd_accounts_list, "list accounts with their health", acc)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("show", cmd_accounts_show, "show an account's per-folder sync state, owner and health", acc)
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = command("remove", cmd_accounts_remove, "remove an account and its mirrored messages", acc)
    p.add_argument("id", type=int)
    p = command("test", cmd_accounts_test, "test an account's login", acc)
    p.add_argument("id", type=int)
    p = command("reset", cmd_accounts_reset, "forget sync state so the next cycle re-syncs", acc)
    p.add_argument("id", type=int)
    p.add_argument("--folder", metavar="NAME", help="only this folder")

    from mailbridge.oauth2.commands import add_parsers as add_oauth2_parsers

    add_oauth2_parsers(command, sub)

    from mailbridge.webhooks.commands import add_parsers as add_webhooks_parsers

    add_webhooks_parsers(command, sub)

    from mailbridge.writeback_cli import add_parsers as add_messages_parsers

    add_messages_parsers(command, sub)

    keys = sub.add_parser("keys", help="manage the credential encryption keys", description="encryption keys")
    ks = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    ks.required = True
    command("rotate", cmd_keys_rotate,
            "re-encrypt every password under the newest key (MAILBRIDGE_ENCRYPTION_KEY=new,old)", ks)
    p = command("generate", cmd_keys_generate, "print a new encryption key", ks)
    p.set_defaults(needs_db=False)

    p = command("sync", runtime.cmd_sync, "bring every folder fully up to date, then exit")
    p.add_argument("--once", action="store_true", required=True, help="one full pass, then exit")
    p.add_argument("--account", type=int, metavar="ID", help="only this account")
    p = command("verify", runtime.cmd_verify, "compare the mirror with the server; exit 1 on drift")
    p.add_argument("id", type=int)
    p = command("demo", demo.cmd_demo, "a throwaway local mailbox synced into the embedded database")
    p.set_defaults(needs_db=False)  # the demo starts a throwaway database of its own
    return parser


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # libraries below the seam log protocol bytes at debug level; keep them quiet
    for name in ("aioimaplib", "aioimaplib.aioimaplib", "asyncio", "trio-asyncio", "pgserver", "hypercorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _fail(message: str, code: int) -> int:
    print(f"mailbridge: error: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns its exit code.

    In this order, so that a usage error has no side effect: the arguments are checked,
    then the settings read (in embedded mode this may create the key file), then the
    database started or reached, then the command run.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    settings: Settings | None = None
    try:
        check: ArgumentCheck = args.check
        check(args)
        settings = load_settings()
        _setup_logging(settings.log_level)
        dsn = ""
        if args.needs_db:
            dsn = settings.database_url or _embedded_dsn(settings)
        from mailbridge.aio import run

        return run(args.handler, Context(settings=settings, dsn=dsn), args)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except (ConfigError, UsageError) as exc:
        return _fail(str(exc), 2)
    except MailbridgeError as exc:
        if settings is not None and settings.log_level == "debug":
            log.exception("command failed")
        return _fail(str(exc), 1)


def _embedded_dsn(settings: Settings) -> str:
    from mailbridge.embedded import start_embedded

    return start_embedded(settings.home)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
