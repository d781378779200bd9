"""`mailbridge messages flag|move|delete`: write-back for scripts, through the running `serve`.

The commands never open an IMAP connection: they send the batch forms of the HTTP API
(`POST /messages/flags`, `/messages/move`, `/messages/delete`) to the `serve` on this
machine (`--url`, else http://127.0.0.1:$PORT, default port 8025; the bearer token is
MAILBRIDGE_API_TOKEN), which hands them to each account's owning actor.  One line per
id on standard output (`ID<TAB>ok<TAB>FOLDER<TAB>UID` or `ID<TAB>STATUS<TAB>error`);
exit 0 when every id succeeded, 1 when one failed, 2 for a usage error; 1 with a clear
message when no `serve` answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, Callable

from mailbridge.context import Context
from mailbridge.errors import MailbridgeError

DEFAULT_PORT = 8025
TIMEOUT = 120.0  # seconds: a batch over many folders waits for each folder's commands


class ServeUnreachable(MailbridgeError):
    """No `mailbridge serve` answered at the URL."""


def base_url(args: argparse.Namespace, port: int | None) -> str:
    """The API's base URL: --url, else the loopback address `serve` listens on by default."""
    if args.url:
        return str(args.url).rstrip("/")
    return f"http://127.0.0.1:{port or DEFAULT_PORT}"


def call(url: str, path: str, body: dict[str, Any], token: str | None, *,
         timeout: float = TIMEOUT) -> tuple[int, Any]:
    """POST `body` as JSON to `url + path`; (status, decoded JSON answer).  Raises
    ServeUnreachable when nothing listens there (or it does not speak the API)."""
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url + path, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            status, raw = reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServeUnreachable(
            f"no mailbridge serve answered at {url} ({reason}); start `mailbridge serve` (the commands "
            "send their changes through it), or give its address with --url") from None
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        raise ServeUnreachable(f"{url} answered {status} without JSON: is it mailbridge serve?") from None


def _lines(results: list[dict[str, Any]]) -> tuple[list[str], bool]:
    out, ok = [], True
    for r in results:
        if r.get("status") == 200:
            message = r.get("message")
            where = (f"{message['folder']}\t{message['uid']}" if message
                     else f"{r.get('folder', '')}\t" + ("expunged" if r.get("permanent") else "(left the mirror)"))
            out.append(f"{r['id']}\tok\t{where}")
        else:
            ok = False
            error = r.get("error") or {}
            out.append(f"{r['id']}\t{r.get('status')}\t{error.get('message', error.get('code', 'failed'))}")
    return out, ok


def _run(ctx: Context, args: argparse.Namespace, path: str, body: dict[str, Any]) -> int:
    url = base_url(args, ctx.settings.port)
    status, answer = call(url, path, body, ctx.settings.api_token)
    if status != 200 or not isinstance(answer, dict) or "results" not in answer:
        error = (answer or {}).get("error", {}) if isinstance(answer, dict) else {}
        fields = error.get("fields") or {}
        detail = "; ".join(f"{k}: {v}" for k, v in fields.items())
        print(f"mailbridge: error: {status} {error.get('message', answer)}" + (f" ({detail})" if detail else ""),
              file=sys.stderr)
        return 2 if status == 422 else 1
    lines, ok = _lines(answer["results"])
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        for line in lines:
            print(line)
    return 0 if ok else 1


async def cmd_messages_flag(ctx: Context, args: argparse.Namespace) -> int:
    import trio

    body: dict[str, Any] = {"ids": args.ids}
    if args.add:
        body["add"] = args.add
    if args.remove:
        body["remove"] = args.remove
    return await trio.to_thread.run_sync(_run, ctx, args, "/messages/flags", body)


async def cmd_messages_move(ctx: Context, args: argparse.Namespace) -> int:
    import trio

    return await trio.to_thread.run_sync(_run, ctx, args, "/messages/move", {"ids": args.ids, "folder": args.folder})


async def cmd_messages_delete(ctx: Context, args: argparse.Namespace) -> int:
    import trio

    return await trio.to_thread.run_sync(_run, ctx, args, "/messages/delete",
                                         {"ids": args.ids, "permanent": bool(args.permanent)})


def check_flag(args: argparse.Namespace) -> None:
    from mailbridge.cli import UsageError

    if not args.add and not args.remove:
        raise UsageError("give flags to change: --add FLAG and/or --remove FLAG (e.g. --add '\\Seen')")


def add_parsers(command: Callable[..., argparse.ArgumentParser], sub: Any) -> None:
    """`messages flag|move|delete` on the top-level parser."""
    messages = sub.add_parser("messages", help="change flags, move and delete messages through the running serve",
                              description="write-back through `mailbridge serve` (its HTTP API)")
    ms = messages.add_subparsers(dest="messages_command", metavar="ACTION")
    ms.required = True

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("ids", type=int, nargs="+", metavar="ID", help="message ids (as /messages shows them)")
        p.add_argument("--url", help="the serve's API (default http://127.0.0.1:$PORT, port 8025)")
        p.add_argument("--json", action="store_true", help="print the API's answer as JSON")
        p.set_defaults(needs_db=False)

    p = command("flag", cmd_messages_flag, "add and remove flags (system flags such as \\Seen, and keywords)", ms)
    common(p)
    p.add_argument("--add", action="append", default=[], metavar="FLAG", help="flag to add (repeatable)")
    p.add_argument("--remove", action="append", default=[], metavar="FLAG", help="flag to remove (repeatable)")
    p.set_defaults(check=check_flag)
    p = command("move", cmd_messages_move, "move messages to another folder of their account", ms)
    common(p)
    p.add_argument("--folder", required=True, metavar="NAME", help="the destination folder's name")
    p = command("delete", cmd_messages_delete, "move messages to Trash, or with --permanent expunge them", ms)
    common(p)
    p.add_argument("--permanent", action="store_true", help="expunge instead of moving to Trash")


__all__ = ["ServeUnreachable", "add_parsers", "base_url", "call"]
