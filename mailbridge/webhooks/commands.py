"""`mailbridge webhooks add|list|show|remove|test|resume`."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Callable

from mailbridge.context import Context
from mailbridge.errors import InvalidInput


def _read_secret(args: argparse.Namespace) -> str:
    """The secret: the first line of standard input (a prompt on a terminal unless
    --secret-stdin)."""
    if args.secret_stdin or not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    return getpass.getpass("webhook secret (hidden): ")


def _events(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [e.strip() for e in text.split(",") if e.strip()] or []


async def cmd_webhooks_add(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.webhooks import manage

    events = _events(args.events)
    manage.check(args.url, "x", events)  # a bad URL or type fails before the secret is asked
    secret = _read_secret(args)
    async with Database.connect(ctx.dsn, max_size=2) as db:
        webhook_id = await manage.add(db, ctx.settings, args.url, secret, events)
    print(f"added webhook {webhook_id}: {args.url} ({', '.join(events) if events else 'every event type'}); "
          "`serve` delivers the events from now on")
    print(webhook_id)
    return 0


async def cmd_webhooks_list(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import webhooks as store

    async with Database.connect(ctx.dsn, max_size=2) as db:
        hooks = [(h, await store.lag(db, h)) for h in await store.list_all(db)]
    if args.json:
        print(json.dumps([h.to_json(lag=lag) for h, lag in hooks], indent=2))
        return 0
    if not hooks:
        print("no webhooks: add one with `mailbridge webhooks add URL --secret-stdin`")
    for h, lag in hooks:
        status = h.last_status if h.last_status is not None else "-"
        line = (f"{h.id}\t{h.state}\t{h.url}\t{','.join(h.event_types) if h.event_types else 'all'}\t"
                f"lag {lag}\tlast status {status}\tfailures {h.failures}")
        if h.last_error and h.state != "ok":
            line += f"\t{h.last_error}"
        print(line)
    return 0


async def cmd_webhooks_show(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.webhooks import manage

    async with Database.connect(ctx.dsn, max_size=2) as db:
        print(json.dumps(await manage.show(db, args.id), indent=2))
    return 0


async def cmd_webhooks_remove(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import webhooks as store

    async with Database.connect(ctx.dsn, max_size=2) as db:
        await store.delete(db, args.id)
    print(f"removed webhook {args.id}")
    return 0


async def cmd_webhooks_test(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.webhooks.delivery import send_test

    async with Database.connect(ctx.dsn, max_size=2) as db:
        attempt = await send_test(db, ctx.settings, args.id)
    if attempt.ok:
        print(f"webhook {args.id}: HTTP {attempt.status} in {attempt.seconds * 1000:.0f} ms")
        return 0
    print(f"webhook {args.id}: failed: {attempt.error}", file=sys.stderr)
    return 1


async def cmd_webhooks_resume(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import webhooks as store

    async with Database.connect(ctx.dsn, max_size=2) as db:
        await store.resume(db, args.id)
    print(f"webhook {args.id}: resumed; the event due is tried again now")
    return 0


def _check_add(args: argparse.Namespace) -> None:
    events = _events(args.events)
    try:
        from mailbridge.webhooks.manage import events_problem, url_problem

        for name, problem in (("URL", url_problem(args.url)), ("--events", events_problem(events))):
            if problem:
                raise InvalidInput(f"{name} {problem}")
    except InvalidInput as exc:
        from mailbridge.cli import UsageError

        raise UsageError(str(exc)) from None


def add_parsers(make: Callable[..., argparse.ArgumentParser],
                sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `webhooks ...` (called by mailbridge.cli with its `command` helper)."""
    parser = sub.add_parser("webhooks", help="signed HTTP deliveries of every change (add, list, test, remove)",
                            description="webhooks: each event POSTed as JSON, signed with the webhook's secret")
    actions = parser.add_subparsers(dest="webhooks_command", metavar="ACTION")
    actions.required = True
    p = make("add", cmd_webhooks_add, "add a webhook (its secret: the first line of standard input; "
             "prints the new id last)", actions)
    p.add_argument("url", help="the receiver's http:// or https:// URL")
    p.add_argument("--events", metavar="A,B", help="only these event types (default: every type)")
    p.add_argument("--secret-stdin", action="store_true", help="read the secret from standard input "
                   "(the default when standard input is not a terminal)")
    p.set_defaults(check=_check_add)
    p = make("list", cmd_webhooks_list, "list webhooks with their delivery state (never their secrets)", actions)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = make("show", cmd_webhooks_show, "one webhook's delivery state as JSON (lag, last status, errors)", actions)
    p.add_argument("id", type=int)
    p = make("remove", cmd_webhooks_remove, "remove a webhook (its deliveries stop)", actions)
    p.add_argument("id", type=int)
    p = make("test", cmd_webhooks_test, "send a webhook.test event now and print the receiver's status "
             "(exit 1 when it fails)", actions)
    p.add_argument("id", type=int)
    p = make("resume", cmd_webhooks_resume, "try a parked (or failing) webhook's due event again now", actions)
    p.add_argument("id", type=int)


__all__ = ["add_parsers"]
