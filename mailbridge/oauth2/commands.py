"""`mailbridge oauth2 add|list`: register OAuth2 clients (the secret from standard input)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable

from mailbridge.context import Context
from mailbridge.oauth2.clients import check_secret, register_client, validate_client
from mailbridge.oauth2.presets import PRESETS
from mailbridge.store.oauth2 import NewOAuth2Client


def new_client(args: argparse.Namespace) -> NewOAuth2Client:
    """The client the arguments describe (a preset fills what is not given); the same
    validation as `POST /oauth2/clients` (`mailbridge.oauth2.clients.validate_client`)."""
    return validate_client({"name": args.name, "token_url": args.token_url, "client_id": args.client_id,
                            "authorize_url": args.authorize_url, "scopes": args.scope, "preset": args.preset})


async def cmd_oauth2_add(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.secrets import Cipher

    new = new_client(args)
    secret = check_secret(sys.stdin.readline().rstrip("\r\n") if not sys.stdin.isatty() else "")
    cipher = Cipher(ctx.settings.require_keys())
    async with Database.connect(ctx.dsn, max_size=2) as db:
        client = await register_client(db, cipher, new, secret)
    print(f"added OAuth2 client {new.name!r} ({'with' if secret else 'without'} a client secret)")
    print(client.id)
    return 0


async def cmd_oauth2_list(ctx: Context, args: argparse.Namespace) -> int:
    from mailbridge.aio.db import Database
    from mailbridge.store import oauth2 as oauth2_store

    async with Database.connect(ctx.dsn, max_size=2) as db:
        clients = await oauth2_store.list_clients(db)
    if args.json:
        print(json.dumps([c.to_json() for c in clients], indent=2))
        return 0
    for c in clients:
        print(f"{c.name}\t{c.client_id}\t{c.token_url}\t{c.scopes}")
    return 0


def add_parsers(make: Callable[..., argparse.ArgumentParser],
                sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Register `oauth2 add` and `oauth2 list` (called by mailbridge.cli with its
    `command` helper and its subparsers)."""
    parser = sub.add_parser("oauth2", help="register OAuth2 clients for OAuth2 sign-in",
                            description="OAuth2 clients")
    actions = parser.add_subparsers(dest="oauth2_command", metavar="ACTION")
    actions.required = True
    p = make("add", cmd_oauth2_add, "register an OAuth2 client (its secret: the first line of standard input)",
             actions)
    p.add_argument("name")
    p.add_argument("--token-url")
    p.add_argument("--client-id", required=True)
    p.add_argument("--authorize-url")
    p.add_argument("--scope", action="append", help="a scope (repeat for several)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="fill the endpoints and scopes of a provider")
    p = make("list", cmd_oauth2_list, "list OAuth2 clients (never their secrets)", actions)
    p.add_argument("--json", action="store_true", help="machine-readable output")
