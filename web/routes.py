"""The API's routes, each declared with its parameters and response schemas."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import trio
from quart import Response, current_app, request

from actors.messages import FetchBody
from actors.registry import ActorBusy, ActorTimeout, ActorUnavailable
from mailbridge import accountops
from mailbridge.errors import (
    AccountLimitReached,
    DatabaseError,
    ImapAuthError,
    ImapConnectionLost,
    ImapError,
    ImapTlsError,
    InvalidInput,
    MessageGone,
    MessageTooLarge,
    NameTaken,
    OAuth2Error,
    OAuth2Unavailable,
    SecretError,
)
from mailbridge.oauth2.clients import check_secret, register_client, validate_client
from mailbridge.oauth2.presets import PRESETS
from mailbridge.secrets import Cipher
from mailbridge.store import accounts as account_store
from mailbridge.store import api as store
from mailbridge.store import oauth2 as oauth2_store
from mailbridge.store import search as search_store
from web import metrics
from web.body import parse_body
from web.dashboard import page
from web.responses import json_response
from web.schema import (
    ERROR,
    MAX_ID,
    Api,
    ApiError,
    Query,
    Response as Resp,
    body_problems,
    invalid,
    ref,
    reject,
)
from web.state import WebState, web_state

log = logging.getLogger("mailbridge.web")
api = Api()

HEARTBEAT_SECONDS = 15.0
POLL_SECONDS = 0.5
GAP_WAIT = 1.0  # seconds an id gap in the event log may be an uncommitted transaction


def st() -> WebState:
    """The running app's shared state."""
    return web_state(current_app)


def err(code: str, text: str) -> Resp:
    return Resp(text, ERROR)


# --- health, actors, metrics, openapi ---------------------------------------------------------


@api.route("GET", "/health", summary="Process alive and database reachable", auth=False, tag="operations",
           responses={200: Resp("alive", {"type": "object", "required": ["status", "database"], "properties": {
               "status": {"type": "string"}, "database": {"type": "string"}, "actors": {"type": "integer"}}}),
                      503: Resp("the database is unreachable", {"type": "object", "properties": {
                          "status": {"type": "string"}, "database": {"type": "string"}}})})
async def health() -> Response:
    state = st()
    problem = "no answer within 3 s"
    with trio.move_on_after(3.0):
        try:
            if await store.ping(state.db):
                return json_response({"status": "ok", "database": "ok",
                                      "actors": len(state.registry.snapshots())})
        except DatabaseError as exc:
            problem = str(exc)
    return json_response({"status": "unavailable", "database": f"unreachable: {problem}"}, 503,
                         {"Retry-After": "5"})


@api.route("GET", "/actors", summary="Every actor's latest status snapshot (never waits on an actor)",
           tag="operations", responses={200: Resp("snapshots", {
               "type": "object", "required": ["actors"],
               "properties": {"actors": {"type": "array", "items": ref("ActorStatus")}}})})
async def list_actors() -> Response:
    registry = st().registry
    out = []
    for snap in registry.snapshots():
        data = snap.to_json()
        data["mailbox_depth"] = registry.mailbox_depth(snap.account_id)
        out.append(data)
    return json_response({"actors": out})


@api.route("GET", "/metrics", summary="Prometheus metrics", tag="operations",
           responses={200: Resp("Prometheus text format", {"type": "string"}, "text/plain")})
async def get_metrics() -> Response:
    state = st()
    backlog = None
    with trio.move_on_after(2.0):  # the actor gauges do not wait for a slow database
        try:
            backlog = await search_store.pending_count(state.db)
        except DatabaseError:
            pass
    return Response(metrics.scrape(state.registry, backlog), content_type=metrics.CONTENT_TYPE_LATEST)


@api.route("GET", "/openapi.json", summary="This document, generated from the route declarations",
           tag="operations", responses={200: Resp("OpenAPI 3.1 document", {"type": "object"})})
async def openapi() -> Response:
    return json_response(api.openapi(title="mailbridge API", version="1"))


# --- dashboard ------------------------------------------------------------------------------


@api.route("GET", "/", summary="The dashboard (HTML): accounts with health, actors with per-folder progress, "
                               "recent events, live", tag="operations",
           query=(Query("access_token", "string", "the API token, for a browser that cannot send the header "
                                                  "(RFC 6750 §2.3); the page removes it from the address bar",
                        max_length=4096),),
           responses={200: Resp("the dashboard page", {"type": "string"}, "text/html")})
async def dashboard(query: dict[str, Any]) -> Response:
    state = st()
    try:
        last = await store.last_event_id(state.db)
    except DatabaseError as exc:  # the page still works; it shows only new events
        log.warning("dashboard: cannot read the last event id: %s", exc)
        last = None
    return page(last_event_id=last, token_required=state.require_token)


# --- accounts ---------------------------------------------------------------------------------

_TEXT = {"type": "string", "maxLength": 320}
_ACCOUNT_FIELDS = {
    "email": _TEXT,
    "host": {"type": "string", "maxLength": 253},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "tls": {"type": "string", "enum": ["tls", "starttls", "none"]},
    "username": _TEXT,
    "password": {"type": "string", "minLength": 1, "maxLength": 1024},
    "verify_certificate": {"type": "boolean"},
    "enabled": {"type": "boolean"},
    "excluded_folders": {"type": ["array", "null"], "maxItems": 1000,
                         "items": {"type": "string", "minLength": 1, "maxLength": 1000}},
}
_OAUTH2_TOKEN = {"type": "string", "minLength": 1, "maxLength": 4096}
_OAUTH2_CLIENT_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
# in place of "password": sign in with OAuth2 through a registered client (GET /oauth2/clients)
_NEW_OAUTH2 = {"type": "object", "required": ["client", "refresh_token"], "additionalProperties": False,
               "properties": {"client": _OAUTH2_CLIENT_NAME, "refresh_token": _OAUTH2_TOKEN}}
_CHANGED_OAUTH2 = {"type": "object", "required": ["refresh_token"], "additionalProperties": False,
                   "properties": {"client": _OAUTH2_CLIENT_NAME, "refresh_token": _OAUTH2_TOKEN}}
# "password" or "oauth2" (exactly one; the handler checks it)
NEW_ACCOUNT = {"type": "object", "required": ["email", "host"], "properties": {**_ACCOUNT_FIELDS, "oauth2": _NEW_OAUTH2},
               "additionalProperties": False}
ACCOUNT_CHANGES = {"type": "object", "properties": {**_ACCOUNT_FIELDS, "oauth2": _CHANGED_OAUTH2},
                   "additionalProperties": False}
_CONNECTION = ("host", "port", "tls", "username", "verify_certificate", "password")
_DESTINATION = ("host", "port", "tls", "username")  # where the password goes: a change needs it sent anew


def account_json(account: Any) -> dict[str, Any]:
    data = account.to_json()
    status = st().registry.status(account.id)
    data["actor_state"] = status.state if status is not None else None
    return data


@api.route("GET", "/accounts", summary="Every account (passwords never included)", tag="accounts",
           responses={200: Resp("accounts", {"type": "object", "required": ["accounts"], "properties": {
               "accounts": {"type": "array", "items": ref("Account")}}})})
async def list_accounts() -> Response:
    accounts = await account_store.list_all(st().db)
    return json_response({"accounts": [account_json(a) for a in accounts]})


def _login_problems(exc: ImapError) -> dict[str, str]:
    text = str(exc)
    if isinstance(exc, ImapAuthError):
        return {"username": "the server rejected this username or password", "password": text}
    if isinstance(exc, ImapTlsError):
        return {"tls": text}
    return {"host": text, "port": text}


async def _test_login(new: Any, password: str) -> None:
    try:
        await accountops.test_login(accountops.endpoint_of(new), password, st().settings)
    except ImapError as exc:
        invalid(_login_problems(exc))


def _validated(schema: Any, body: dict[str, Any], fields: dict[str, Any], *, credential_required: bool = False) -> Any:
    """`fields` as a NewAccount, or one 422 naming every bad field: those the body's schema
    rejects together with those the command line's validation rejects (and a missing or
    doubled credential: "password" or "oauth2", at most one, with `credential_required`
    exactly one)."""
    problems = body_problems(schema, body)
    if "password" in body and "oauth2" in body:
        problems.setdefault("oauth2", "give either password or oauth2, not both")
    elif credential_required and "password" not in body and "oauth2" not in body:
        problems.setdefault("password", "is required (or oauth2: {\"client\", \"refresh_token\"})")
    try:
        new = accountops.validate(fields)
    except InvalidInput as exc:
        for key, value in exc.fields.items():
            problems.setdefault(key, value)
        new = None
    invalid(problems)
    assert new is not None
    return new


@api.route("POST", "/accounts", summary="Add an account (the login is tested before saving)", tag="accounts",
           body=NEW_ACCOUNT, check_body=False,
           responses={201: Resp("created", ref("Account")), 409: err("account_limit", "the account limit is reached"),
                      422: err("invalid_input", "bad fields, or the server refused the login")})
async def create_account(body: dict[str, Any]) -> Response:
    state = st()
    new = _validated(NEW_ACCOUNT, body, body, credential_required=True)
    try:
        if "oauth2" in body:  # the command line's `accounts add --oauth2` path
            try:
                account_id = await accountops.add_oauth2_account(state.db, state.settings, new,
                                                                 body["oauth2"]["client"],
                                                                 body["oauth2"]["refresh_token"])
            except (InvalidInput, ImapError) as exc:
                reject(_oauth2_problems(exc))
        else:
            account_id = await accountops.add_account(state.db, state.settings, new, body["password"])
    except AccountLimitReached as exc:
        raise ApiError(409, "account_limit", str(exc)) from None
    except ImapError as exc:
        invalid(_login_problems(exc))
        raise
    extra: dict[str, Any] = {k: body[k] for k in ("enabled", "excluded_folders") if k in body}
    if extra:
        account = await store.update_account(state.db, account_id, extra)
    else:
        account = await account_store.get(state.db, account_id)
    return json_response(account_json(account), 201, {"Location": f"/accounts/{account_id}"})


def _oauth2_problems(exc: InvalidInput | ImapError) -> dict[str, str]:
    """The 422 fields of a failed OAuth2 sign-in (never a token: the messages hold none)."""
    text = str(exc)
    if isinstance(exc, InvalidInput):
        return {"oauth2.client" if k == "oauth2" else "oauth2.refresh_token" if k == "refresh_token" else k: v
                for k, v in exc.fields.items()} or {"oauth2": text}
    if isinstance(exc, OAuth2Unavailable):
        return {"oauth2.client": text}
    if isinstance(exc, OAuth2Error):
        return {"oauth2.refresh_token": text}
    if isinstance(exc, ImapAuthError):
        return {"username": "the server refused the OAuth2 access token for this username", "oauth2": text}
    return _login_problems(exc)


@api.route("GET", "/accounts/{id}", summary="One account", tag="accounts",
           responses={200: Resp("the account", ref("Account"))})
async def get_account(id: int) -> Response:
    return json_response(account_json(await account_store.get(st().db, id)))


@api.route("PATCH", "/accounts/{id}",
           summary="Change an account; a new password or server wakes its actor (the login is tested first)",
           tag="accounts", body=ACCOUNT_CHANGES, check_body=False,
           responses={200: Resp("the changed account", ref("Account")),
                      422: err("invalid_input", "bad fields, or the server refused the login")})
async def patch_account(id: int, body: dict[str, Any]) -> Response:
    state = st()
    current = await account_store.get(state.db, id)
    merged = {
        "email": body.get("email", current.email), "host": body.get("host", current.imap_host),
        "port": body.get("port", current.imap_port), "tls": body.get("tls", current.imap_tls),
        "username": body.get("username", current.imap_username),
        "verify_certificate": body.get("verify_certificate", current.verify_certificate),
    }
    new = _validated(ACCOUNT_CHANGES, body, merged)
    changes: dict[str, Any] = {}
    for field, value in (("email", new.email), ("host", new.imap_host), ("port", new.imap_port),
                         ("tls", new.imap_tls), ("username", new.imap_username),
                         ("verify_certificate", new.verify_certificate)):
        if field in body and value != merged_current(current, field):
            changes[field] = value
    for field in ("enabled", "excluded_folders"):
        if field in body:
            changes[field] = body[field]
    password = body.get("password")
    oauth2 = body.get("oauth2")
    is_oauth2 = current.auth_kind == "oauth2"
    _require_password_for_new_destination(changes, password if oauth2 is None else oauth2, oauth2=is_oauth2)
    if oauth2 is not None:  # new OAuth2 credentials (`accounts update --refresh-token-stdin`)
        client = oauth2.get("client") or current.oauth2_client
        if client is None:
            reject({"oauth2.client": "is required: the account signs in with a password"})
        try:
            grant = await accountops.refresh_grant(state.db, state.settings, client, oauth2["refresh_token"])
            await accountops.test_oauth2_login(state.settings, new, grant)
        except (InvalidInput, ImapError) as exc:
            reject(_oauth2_problems(exc))
        async with state.db.transaction() as tx:  # the trigger's NOTIFY replaces the actor
            await accountops.store_oauth2_tokens(tx, state.settings, id, grant)
            account = await store.update_account(tx, id, changes)
        return json_response(account_json(account))
    token = None
    if password is not None or any(f in changes for f in _CONNECTION):
        cipher = Cipher(state.settings.require_keys())
        if password is None and is_oauth2:
            from mailbridge.oauth2.signin import stored_credential

            try:
                await accountops.test_login(accountops.endpoint_of(new),
                                            await stored_credential(state.db, state.settings, current),
                                            state.settings)
            except SecretError as exc:
                reject({"oauth2": f"the stored tokens cannot be decrypted ({exc}); send a new refresh token"})
            except ImapError as exc:
                reject(_oauth2_problems(exc))
        else:
            if password is None:
                try:
                    password = cipher.decrypt(await account_store.get_password_encrypted(state.db, id))
                except SecretError as exc:
                    reject({"password": f"the stored password cannot be decrypted ({exc}); send a new one"})
            await _test_login(new, password)
        if "password" in body and password is not None:
            token = cipher.encrypt(password)
    if token is not None and is_oauth2:  # a password in place of OAuth2 from now on
        async with state.db.transaction() as tx:
            await oauth2_store.clear_account_oauth2(tx, id)
            account = await store.update_account(tx, id, changes, password_encrypted=token)
    else:
        account = await store.update_account(state.db, id, changes, password_encrypted=token)
    return json_response(account_json(account))


def _require_password_for_new_destination(changes: dict[str, Any], password: Any, *, oauth2: bool = False) -> None:
    """422 unless the password (or, for an OAuth2 account, a new refresh token or a
    password) comes with a change of where or how it is sent (host, port, tls, username,
    or turning certificate checks off): the stored secret is only ever sent to the server
    it was saved for."""
    moved = [f for f in _DESTINATION if f in changes]
    if changes.get("verify_certificate") is False:
        moved.append("verify_certificate")
    if moved and password is None and oauth2:
        reject({"oauth2": "is required when changing " + ", ".join(moved) + ": the stored tokens are "
                          "sent only to the server they were saved for; send a new refresh token (or a password)"})
    if moved and password is None:
        reject({"password": "is required when changing " + ", ".join(moved) + ": the stored password is "
                            "sent only to the server it was saved for; send the password for the new settings"})


def merged_current(account: Any, field: str) -> Any:
    return {"email": account.email, "host": account.imap_host, "port": account.imap_port,
            "tls": account.imap_tls, "username": account.imap_username,
            "verify_certificate": account.verify_certificate}[field]


@api.route("DELETE", "/accounts/{id}", summary="Remove an account and its mirrored messages", tag="accounts",
           responses={204: Resp("removed")})
async def delete_account(id: int) -> Response:
    await account_store.delete(st().db, id)
    return Response("", status=204)


# --- OAuth2 clients ---------------------------------------------------------------------------

NEW_OAUTH2_CLIENT = {
    "type": "object", "required": ["name", "client_id"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 100},
        "token_url": {"type": "string", "maxLength": 2000},
        "authorize_url": {"type": ["string", "null"], "maxLength": 2000},
        "client_id": {"type": "string", "minLength": 1, "maxLength": 500},
        "client_secret": {"type": ["string", "null"], "maxLength": 4096},
        "scopes": {"type": "string", "maxLength": 2000},
        "preset": {"type": "string", "enum": sorted(PRESETS)},
    },
}


@api.route("GET", "/oauth2/clients", summary="The registered OAuth2 clients (never their secrets)", tag="oauth2",
           responses={200: Resp("clients", {"type": "object", "required": ["clients"], "properties": {
               "clients": {"type": "array", "items": ref("OAuth2Client")}}})})
async def list_oauth2_clients() -> Response:
    clients = await oauth2_store.list_clients(st().db)
    return json_response({"clients": [c.to_json() for c in clients]})


@api.route("POST", "/oauth2/clients",
           summary="Register an OAuth2 client (the command line's `oauth2 add`; a preset fills the endpoints "
                   "and scopes; the secret is stored encrypted)", tag="oauth2",
           body=NEW_OAUTH2_CLIENT, check_body=False,
           responses={201: Resp("registered", ref("OAuth2Client")),
                      409: err("already_exists", "a client with this name exists")})
async def create_oauth2_client(body: dict[str, Any]) -> Response:
    state = st()
    problems = body_problems(NEW_OAUTH2_CLIENT, body)
    new = secret = None
    try:
        new = validate_client(body)
    except InvalidInput as exc:
        for key, value in exc.fields.items():
            problems.setdefault(key, value)
    try:
        secret = check_secret(body.get("client_secret"))
    except InvalidInput as exc:
        for key, value in exc.fields.items():
            problems.setdefault(key, value)
    invalid(problems)
    assert new is not None and secret is not None
    try:
        client = await register_client(state.db, Cipher(state.settings.require_keys()), new, secret)
    except NameTaken as exc:
        raise ApiError(409, "already_exists", str(exc), exc.fields) from None
    return json_response(client.to_json(), 201)


# --- folders, messages, threads -----------------------------------------------------------------


async def _require_account(account_id: int) -> None:
    if not await store.account_exists(st().db, account_id):
        raise ApiError(404, "not_found", f"no account with id {account_id}")


@api.route("GET", "/accounts/{id}/folders", summary="The account's folders with their sync state and counts",
           tag="messages", responses={200: Resp("folders", {"type": "object", "required": ["folders"], "properties": {
               "folders": {"type": "array", "items": ref("Folder")}}})})
async def list_folders(id: int) -> Response:
    await _require_account(id)
    return json_response({"folders": await store.list_folders(st().db, id)})


message_json = store.message_json  # the API's message shape (webhook events carry it too)


def encode_cursor(row: dict[str, Any]) -> str:
    date = row["internal_date"]
    data = json.dumps({"d": date.isoformat() if date is not None else None, "i": row["id"]},
                      separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[datetime | None, int]:
    bad = ApiError(400, "invalid_cursor", "the cursor is not one this API gave out; start again without it",
                   {"cursor": "invalid"})
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise bad from None
    if not isinstance(data, dict) or set(data) != {"d", "i"}:
        raise bad
    last_id, date = data["i"], data["d"]
    if not isinstance(last_id, int) or isinstance(last_id, bool) or not 1 <= last_id <= MAX_ID:
        raise bad
    if date is None:
        return None, last_id
    if not isinstance(date, str):
        raise bad
    try:
        value = datetime.fromisoformat(date)
    except ValueError:
        raise bad from None
    if value.tzinfo is None:
        raise bad
    try:
        return value.astimezone(timezone.utc), last_id
    except OverflowError:
        raise bad from None


MESSAGE_QUERY = (
    Query("folder", "string", "folder name as shown by /accounts/{id}/folders (exact); for a Gmail label "
                              "folder (INBOX, [Gmail]/Sent Mail, a user label...) what Gmail shows there",
          max_length=1000),
    Query("label", "string", "only messages carrying this Gmail label (\\Inbox, \\Sent, Work, ...)",
          max_length=1000),
    Query("unread", "boolean", "only unread (true) or read (false) messages"),
    Query("flagged", "boolean", "only flagged (true) or unflagged (false) messages"),
    Query("since", "date-time", "internal date on or after"),
    Query("until", "date-time", "internal date before"),
    Query("from", "string", "part of the sender's address or name (case-insensitive)"),
    Query("q", "string", "full-text search over subject, names and addresses (web search syntax: "
                         "words, \"phrases\", -exclusions, or)"),
    Query("limit", "integer", "page size", minimum=1, maximum=500, default=50),
    Query("cursor", "string", "next_cursor of the previous page", max_length=200),
)


@api.route("GET", "/accounts/{id}/messages",
           summary="The account's messages, newest first (internal date, then id), with an opaque cursor",
           tag="messages", query=MESSAGE_QUERY,
           responses={200: Resp("a page", {"type": "object", "required": ["messages", "next_cursor"], "properties": {
               "messages": {"type": "array", "items": ref("Message")},
               "next_cursor": {"type": ["string", "null"]}}})})
async def list_messages(id: int, query: dict[str, Any]) -> Response:
    await _require_account(id)
    after = decode_cursor(query["cursor"]) if query["cursor"] else None
    q = (query["q"] or "").strip() or None
    filters = store.MessageFilter(folder=query["folder"], unread=query["unread"], flagged=query["flagged"],
                                  since=query["since"], until=query["until"], sender=query["from"] or None, q=q,
                                  label=query["label"])
    limit = query["limit"]
    rows = await store.list_messages(st().db, id, filters, limit=limit + 1, after=after)
    more = len(rows) > limit
    rows = rows[:limit]
    return json_response({"messages": [message_json(r) for r in rows],
                          "next_cursor": encode_cursor(rows[-1]) if more and rows else None})


@api.route("GET", "/messages/{id}", summary="One message's metadata", tag="messages",
           responses={200: Resp("the message", ref("Message"))})
async def get_message(id: int) -> Response:
    row = await store.get_message(st().db, id)
    if row is None:
        raise ApiError(404, "not_found", f"no message with id {id}")
    return json_response(message_json(row))


@api.route("GET", "/accounts/{id}/threads/{thread}",
           summary="The thread of message {thread}: every message of the account linked to it through "
                   "Message-ID, In-Reply-To and References, oldest first, each with its parent",
           tag="messages", responses={200: Resp("the thread", {
               "type": "object", "required": ["thread", "root_id", "messages"], "properties": {
                   "thread": {"type": "integer"}, "root_id": {"type": "integer"},
                   "messages": {"type": "array", "items": ref("Message")}}})})
async def get_thread(id: int, thread: int) -> Response:
    await _require_account(id)
    rows = await store.thread_of(st().db, id, thread)
    if not rows:
        raise ApiError(404, "not_found", f"account {id} has no message with id {thread}")
    by_message_id: dict[str, int] = {}
    for r in rows:
        if r["message_id"]:
            by_message_id.setdefault(r["message_id"], r["id"])
    out = []
    for r in rows:
        data = message_json(r)
        parent = None
        for candidate in [r["in_reply_to"], *reversed(r.get("references_header") or [])]:
            target = by_message_id.get(candidate) if candidate else None
            if target is not None and candidate != r["message_id"]:
                parent = target
                break
        data["parent_id"] = parent
        out.append(data)
    root = next((m["id"] for m in out if m["parent_id"] is None), out[0]["id"])
    return json_response({"thread": thread, "root_id": root, "messages": out})


# --- bodies ----------------------------------------------------------------------------------------

BODY_SCHEMA = {
    "type": "object", "required": ["id", "headers", "text", "html", "attachments"], "properties": {
        "id": {"type": "integer"}, "account_id": {"type": "integer"}, "size": {"type": "integer"},
        "headers": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "text": {"type": ["string", "null"]}, "html": {"type": ["string", "null"]},
        "attachments": {"type": "array", "items": {
            "type": "object", "required": ["filename", "content_type", "size", "content_id"], "properties": {
                "filename": {"type": ["string", "null"]}, "content_type": {"type": "string"},
                "size": {"type": "integer"}, "content_id": {"type": ["string", "null"]},
                "disposition": {"type": ["string", "null"]}}}}}}


def _retry(seconds: float | None, default: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(round(seconds if seconds is not None else default))))}


@api.route("GET", "/messages/{id}/body",
           summary="The message's body, fetched from the server by the account's actor: text, html (as sent), "
                   "attachments, chosen headers; raw=1 gives the exact source as message/rfc822",
           tag="messages", query=(Query("raw", "boolean", "return the raw message/rfc822 bytes", default=False),),
           responses={200: Resp("the body (raw=1: the message/rfc822 source)", BODY_SCHEMA,
                                alternatives=(("message/rfc822", {"type": "string"}),)),
                      404: err("message_gone", "no such message (or the server no longer has it)"),
                      413: err("message_too_large", "over MAILBRIDGE_BODY_MAX_BYTES"),
                      502: err("imap_error", "the IMAP server refused the fetch"),
                      503: err("actor_unavailable", "the account is not running here (Retry-After)"),
                      504: err("actor_timeout", "the actor did not answer in time (Retry-After)")})
async def get_body(id: int, query: dict[str, Any]) -> Response:
    state = st()
    row = await store.get_message(state.db, id)
    if row is None:
        raise ApiError(404, "not_found", f"no message with id {id}")
    request_ = FetchBody(folder_id=row["folder_id"], folder_raw_name=row["folder_raw_name"],
                         uidvalidity=row["folder_uidvalidity"], uid=row["uid"],
                         max_bytes=state.settings.body_max_bytes, size=row["size_bytes"])
    try:
        raw = await state.registry.request(row["account_id"], request_, timeout=state.body_timeout)
    except ActorBusy as exc:
        metrics.BODY_FETCHES.labels("busy").inc()
        raise ApiError(503, "actor_busy", str(exc), headers=_retry(exc.retry_after, 2)) from None
    except ActorUnavailable as exc:
        metrics.BODY_FETCHES.labels("unavailable").inc()
        raise ApiError(503, "actor_unavailable", str(exc), headers=_retry(exc.retry_after, 5)) from None
    except ActorTimeout as exc:
        metrics.BODY_FETCHES.labels("timeout").inc()
        raise ApiError(504, "actor_timeout", str(exc), headers=_retry(exc.retry_after, 5)) from None
    except MessageGone as exc:
        metrics.BODY_FETCHES.labels("gone").inc()
        try:
            await store.remove_gone_message(state.db, id, str(exc))
        except DatabaseError as db_exc:
            log.warning("message %d is gone from the server but could not be dropped: %s", id, db_exc)
        raise ApiError(404, "message_gone", f"message {id} is no longer on the server: {exc}") from None
    except MessageTooLarge as exc:
        metrics.BODY_FETCHES.labels("too_large").inc()
        raise ApiError(413, "message_too_large", str(exc)) from None
    except ImapConnectionLost as exc:
        metrics.BODY_FETCHES.labels("unavailable").inc()
        raise ApiError(503, "actor_unavailable", f"the IMAP connection dropped: {exc}",
                       headers=_retry(None, 5)) from None
    except ImapError as exc:
        metrics.BODY_FETCHES.labels("imap_error").inc()
        raise ApiError(502, "imap_error", f"the IMAP server refused the fetch: {exc}") from None
    metrics.BODY_FETCHES.labels("ok").inc()
    assert isinstance(raw, (bytes, bytearray)), "a FetchBody is answered with the message's source"
    raw = bytes(raw)
    if query["raw"]:
        return Response(raw, content_type="message/rfc822",
                        headers={"Content-Disposition": f'inline; filename="message-{id}.eml"'})
    parsed = await trio.to_thread.run_sync(parse_body, raw)
    return json_response({"id": id, "account_id": row["account_id"], **parsed})


# --- events ------------------------------------------------------------------------------------------


def _sse(event: dict[str, Any]) -> bytes:
    payload = event.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            pass
    data = {"id": event["id"], "kind": event["kind"], "account_id": event["account_id"],
            "folder_id": event["folder_id"], "payload": payload,
            "created_at": event["created_at"].isoformat() if event.get("created_at") else None}
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    kind = "".join(ch for ch in str(event["kind"]) if ch.isalnum() or ch in "_-.") or "message"
    return f"id: {event['id']}\nevent: {kind}\ndata: {text}\n\n".encode("utf-8")


@api.route("GET", "/events",
           summary="Server-sent events from the change log (message_added, message_changed, message_moved, message_removed, "
                   "folder_reset, account_health, ...); resumable with Last-Event-ID",
           tag="operations",
           query=(Query("since", "integer", "replay events after this id (Last-Event-ID wins); default: "
                                            "only new events", minimum=0, maximum=MAX_ID),
                  Query("account", "integer", "only this account's events", minimum=1, maximum=MAX_ID)),
           responses={200: Resp("an endless text/event-stream", {"type": "string"}, "text/event-stream"),
                      503: err("too_many_streams", "the most event streams this server keeps are open "
                                                   "(Retry-After)")})
async def events(query: dict[str, Any]) -> Response:
    state = st()
    header = request.headers.get("Last-Event-ID")
    if header is not None and header.strip():
        try:
            start = Query("Last-Event-ID", "integer", minimum=0, maximum=MAX_ID).parse(header)
        except ValueError as exc:
            raise ApiError(400, "invalid_query", f"Last-Event-ID {exc}", {"Last-Event-ID": str(exc)}) from None
    elif query["since"] is not None:
        start = query["since"]
    else:
        start = await store.last_event_id(state.db)
    account = query["account"]

    async def stream() -> AsyncIterator[bytes]:
        last = start
        gap_since: float | None = None
        yield b"retry: 2000\n: mailbridge events\n\n"
        beat = trio.current_time()
        while not state.stopping.is_set():
            try:
                rows = await store.events_after(state.db, last)
            except DatabaseError as exc:
                log.warning("event stream: cannot read events: %s", exc)
                yield b": database unavailable; retrying\n\n"
                await trio.sleep(2.0)
                continue
            # ids are handed out before commit: a gap may be a transaction still in flight,
            # so only the gap-free prefix goes out until the gap is GAP_WAIT old
            ready = []
            expect = last + 1
            for r in rows:
                if r["id"] != expect:
                    break
                ready.append(r)
                expect += 1
            if len(ready) < len(rows):
                now = trio.current_time()
                if gap_since is None:
                    gap_since = now
                if now - gap_since >= GAP_WAIT:
                    ready, gap_since = rows, None
            else:
                gap_since = None
            for r in ready:
                if account is None or r["account_id"] == account:
                    yield _sse(r)
                    beat = trio.current_time()
                last = r["id"]
            if ready and len(ready) == len(rows) and len(rows) >= 500:
                continue  # more waiting
            if trio.current_time() - beat >= HEARTBEAT_SECONDS:
                yield b": keepalive\n\n"
                beat = trio.current_time()
            changed = state.registry.changed
            with trio.move_on_after(POLL_SECONDS):
                await changed.wait()
            await trio.sleep(0.05)

    counted = state.open_event_stream(stream())
    if counted is None:
        raise ApiError(503, "too_many_streams",
                       f"{state.max_event_streams} event streams are open, the most this server keeps; "
                       "close one or try again later", headers={"Retry-After": "10"})
    response = Response(counted, content_type="text/event-stream; charset=utf-8",
                        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    response.timeout = None
    return response
