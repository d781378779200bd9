"""The write-back routes: change flags, move, delete, one message or many, through the
account's owning actor (never a second IMAP connection).

- `POST /messages/{id}/flags` `{"add": [...], "remove": [...]}` → the message as mirrored after it
- `POST /messages/{id}/move` `{"folder": NAME}` → `{"message", "moved", "folder", "new_uid_pending"}`
- `DELETE /messages/{id}` (to the Trash folder as a move) or `?permanent=1` (STORE \\Deleted + UID EXPUNGE)
- `POST /messages/flags` `{"ids": [...], "add", "remove"}`, `POST /messages/move` `{"ids", "folder"}`,
  `POST /messages/delete` `{"ids", "permanent"}` → `{"results": [{"id", "status", "message"|"error"}]}`

Each is one request per account (a batch's ids are grouped by account and folder), sent
to the actor's mailbox, answered after the server's tagged OK with the mirror already
updated (its events carry `"origin": "api"`).  A process whose registry does not run
the account's actor answers 409 naming the owner recorded in `accounts.owner`.
"""

from __future__ import annotations

import os
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from quart import Response

from actors.messages import ExpungeMessages, MoveMessages, StoreFlags, Target, Write
from actors.registry import ActorBusy, ActorTimeout, ActorUnavailable
from actors.writeback import MAX_FLAGS, Outcome, check_flags
from mailbridge.errors import DatabaseError, ImapConnectionLost, ImapError, MessageGone, WriteRefused
from mailbridge.store import accounts as account_store
from mailbridge.store import api as api_store
from mailbridge.store import writeback as store
from web.responses import json_response
from web.routes import api, err, st
from web.schema import ApiError, Query, Response as Resp, body_problems, invalid, ref

_THIS_PROCESS = f"{socket.gethostname()}:{os.getpid()}"  # as accounts.owner names a process
MAX_BATCH = 1000
WRITE_TIMEOUT = 30.0  # seconds a write may wait for its actor (a batch of many folders takes longer)

_FLAG_LIST = {"type": "array", "maxItems": MAX_FLAGS, "items": {"type": "string", "minLength": 1, "maxLength": 200},
              "description": "system flags (\\Seen \\Flagged \\Answered \\Draft \\Deleted) and keywords (IMAP atoms)"}
_IDS = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH, "items": {"type": "integer", "minimum": 1}}
FLAGS_BODY = {"type": "object", "additionalProperties": False,
              "properties": {"add": _FLAG_LIST, "remove": _FLAG_LIST}}
MOVE_BODY = {"type": "object", "required": ["folder"], "additionalProperties": False,
             "properties": {"folder": {"type": "string", "minLength": 1, "maxLength": 1000,
                                       "description": "the destination's name as /accounts/{id}/folders shows it"}}}
BATCH_FLAGS_BODY = {"type": "object", "required": ["ids"], "additionalProperties": False,
                    "properties": {"ids": _IDS, "add": _FLAG_LIST, "remove": _FLAG_LIST}}
BATCH_MOVE_BODY = {"type": "object", "required": ["ids", "folder"], "additionalProperties": False,
                   "properties": {"ids": _IDS, "folder": MOVE_BODY["properties"]["folder"]}}  # type: ignore[index]
BATCH_DELETE_BODY = {"type": "object", "required": ["ids"], "additionalProperties": False,
                     "properties": {"ids": _IDS, "permanent": {"type": "boolean", "default": False}}}

MOVED = {"type": "object", "required": ["id", "moved", "folder", "message"], "properties": {
    "id": {"type": "integer"}, "moved": {"type": "boolean"}, "folder": {"type": "string"},
    "permanent": {"type": "boolean"},
    "message": {"oneOf": [ref("Message"), {"type": "null"}],
                "description": "the row in its new folder; null when it left the mirror (the destination is "
                               "not mirrored, or the server gave no new UID: its next visit brings it)"},
    "new_uid_pending": {"type": "boolean"}}}
BATCH_RESULT = {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
    "type": "object", "required": ["id", "status"], "properties": {
        "id": {"type": "integer"}, "status": {"type": "integer", "description": "as the single form would answer"},
        "message": {"oneOf": [ref("Message"), {"type": "null"}]},
        "error": {"type": "object"}}}}}}

_ERRORS = {404: err("not_found", "no such message (or it is no longer on the server: message_gone)"),
           422: err("invalid_input", "bad flags (\\Recent, an unknown system flag, a keyword that is not an "
                                     "atom), or no such folder (folder_not_found)"),
           409: err("not_owner", "another process owns the account (named), or the write was refused as unsafe "
                                 "(e.g. no UIDPLUS and other \\Deleted messages)"),
           502: err("imap_error", "the IMAP server refused the command (its text)"),
           503: err("actor_unavailable", "the account's actor is not running here now (Retry-After)"),
           504: err("actor_timeout", "the actor did not answer in time (Retry-After)")}


def _retry(seconds: float | None, default: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, int(round(seconds if seconds is not None else default))))}


# --- reaching the actor ------------------------------------------------------------------------------


async def _send(account_id: int, payload: Write) -> Outcome:
    """The actor's answer to `payload`; ApiError for every way it can fail."""
    state = st()
    try:
        value = await state.registry.request(account_id, payload, timeout=WRITE_TIMEOUT)
    except ActorBusy as exc:
        raise ApiError(503, "actor_busy", str(exc), headers=_retry(exc.retry_after, 2)) from None
    except ActorUnavailable as exc:
        status = state.registry.status(account_id)
        if status is None or not status.lock_held:
            owner = (status.owner if status is not None else None) or \
                await account_store.get_owner(state.db, account_id)
            if owner is not None and owner != _THIS_PROCESS:  # ours: the actor restarts, 503
                raise ApiError(409, "not_owner", f"account {account_id} is synced by another process ({owner}); "
                               "send the request to that process's API") from None
        raise ApiError(503, "actor_unavailable", str(exc), headers=_retry(exc.retry_after, 5)) from None
    except ActorTimeout as exc:
        raise ApiError(504, "actor_timeout", str(exc), headers=_retry(exc.retry_after, 5)) from None
    except MessageGone as exc:
        raise ApiError(404, "message_gone", f"no longer on the server: {exc}") from None
    except WriteRefused as exc:
        raise ApiError(409, "refused", str(exc)) from None
    except ImapConnectionLost as exc:
        raise ApiError(503, "actor_unavailable", f"the IMAP connection dropped: {exc}",
                       headers=_retry(None, 5)) from None
    except ImapError as exc:
        raise ApiError(502, "imap_error", f"the IMAP server refused the change: {exc}") from None
    except DatabaseError as exc:
        raise ApiError(500, "database_error", "the server made the change but the mirror could not be updated "
                       f"now ({type(exc).__name__}); the next visit of the folder brings it") from None
    assert isinstance(value, Outcome), "a write is answered with its Outcome"
    return value


def _targets(rows: Sequence[dict[str, Any]]) -> tuple[Target, ...]:
    by_folder: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_folder[r["folder_id"]].append(r)
    return tuple(Target(fid, rs[0]["folder_raw_name"], rs[0]["folder_uidvalidity"],
                        tuple(sorted({r["uid"] for r in rs}))) for fid, rs in sorted(by_folder.items()))


async def _destination(account_id: int, name: str) -> Mapping[str, Any]:
    folder = await store.folder_by_name(st().db, account_id, name)
    if folder is None or not folder["exists_on_server"]:
        raise ApiError(422, "folder_not_found", f"account {account_id} has no folder named {name!r}",
                       fields={"folder": "no such folder in the message's account"})
    if folder["gmail_view"] is not None:
        # Gmail keeps every message in All Mail: a "move" into a label folder adds the label
        raise ApiError(422, "gmail_label", f"{name!r} is a Gmail label ({folder['gmail_view']}), a view over "
                       "All Mail: moving there would only add the label, and label changes are not built yet",
                       fields={"folder": "a Gmail label folder"})
    return folder


async def _trash(account_id: int) -> Mapping[str, Any]:
    folder = await store.trash_folder(st().db, account_id)
    if folder is None:
        raise ApiError(409, "no_trash", f"account {account_id} has no Trash folder (special-use \\Trash, or "
                       "named Trash); delete with ?permanent=1, or move it to a folder of your choice")
    return folder


def _flags(body: Mapping[str, Any], schema: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    problems = body_problems(schema, body)
    add, add_problems = check_flags("add", body.get("add"))
    remove, remove_problems = check_flags("remove", body.get("remove"))
    for key, value in {**add_problems, **remove_problems}.items():
        problems.setdefault(key, value)
    if not problems and not add and not remove:
        problems["body"] = "give flags to add and/or remove"
    both = set(add) & set(remove)
    if both and not problems:
        problems["remove"] = f"{sorted(both)[0]!r} is both added and removed"
    invalid(problems)
    return add, remove


async def _message_row(id: int) -> dict[str, Any]:
    row = await api_store.get_message(st().db, id)
    if row is None:
        raise ApiError(404, "not_found", f"no message with id {id}")
    return row


async def _after(id: int) -> dict[str, Any] | None:
    row = await api_store.get_message(st().db, id)
    return api_store.message_json(row) if row is not None else None


async def _moved_answer(id: int, outcome: Outcome, folder: str, **extra: Any) -> dict[str, Any]:
    message = await _after(id)
    return {"id": id, "moved": True, "folder": folder, "message": message,
            "new_uid_pending": message is None and outcome.new_uid_unknown, **extra}


# --- one message -------------------------------------------------------------------------------------


@api.route("POST", "/messages/{id}/flags",
           summary="Add and remove flags (system flags and keywords) on the server, through the account's actor; "
                   "answers with the message as mirrored once the server confirmed",
           tag="write-back", body=FLAGS_BODY, check_body=False,
           responses={200: Resp("the message after the change", ref("Message")), **_ERRORS})
async def post_flags(id: int, body: dict[str, Any]) -> Response:
    add, remove = _flags(body, FLAGS_BODY)
    row = await _message_row(id)
    outcome = await _send(row["account_id"], StoreFlags(row["account_id"], _targets([row]), add, remove))
    if outcome.missing:
        raise ApiError(404, "message_gone", f"message {id} is no longer on the server")
    message = await _after(id)
    if message is None:
        raise ApiError(404, "message_gone", f"message {id} left the mirror meanwhile")
    return json_response(message)


@api.route("POST", "/messages/{id}/move",
           summary="Move the message to another folder of its account on the server (UID MOVE, or COPY + "
                   "\\Deleted + UID EXPUNGE), through the account's actor", tag="write-back",
           body=MOVE_BODY, responses={200: Resp("where it went", MOVED), **_ERRORS})
async def post_move(id: int, body: dict[str, Any]) -> Response:
    row = await _message_row(id)
    account_id = row["account_id"]
    dest = await _destination(account_id, body["folder"])
    if dest["id"] == row["folder_id"]:
        return json_response({"id": id, "moved": False, "folder": dest["name"],
                              "message": api_store.message_json(row), "new_uid_pending": False})
    outcome = await _send(account_id, MoveMessages(account_id, _targets([row]), dest["id"], dest["raw_name"],
                                                   dest["name"], not dest["excluded"]))
    return json_response(await _moved_answer(id, outcome, dest["name"]))


@api.route("DELETE", "/messages/{id}",
           summary="Delete the message: moved to the account's Trash (special-use \\Trash), or with permanent=1 "
                   "marked \\Deleted and expunged (UID EXPUNGE: only this message)", tag="write-back",
           query=(Query("permanent", "boolean", "expunge instead of moving to Trash", default=False),),
           responses={200: Resp("what was done", MOVED), **_ERRORS})
async def delete_message(id: int, query: dict[str, Any]) -> Response:
    row = await _message_row(id)
    account_id = row["account_id"]
    if query["permanent"]:
        await _send(account_id, ExpungeMessages(account_id, _targets([row])))
        return json_response({"id": id, "moved": False, "folder": row["folder"], "message": None,
                              "permanent": True, "new_uid_pending": False})
    trash = await _trash(account_id)
    if trash["id"] == row["folder_id"]:
        raise ApiError(409, "in_trash", f"message {id} is in {trash['name']!r} already; "
                       "delete it with ?permanent=1")
    outcome = await _send(account_id, MoveMessages(account_id, _targets([row]), trash["id"], trash["raw_name"],
                                                   trash["name"], not trash["excluded"]))
    return json_response(await _moved_answer(id, outcome, trash["name"], permanent=False))


# --- many messages -----------------------------------------------------------------------------------


def _ids(body: Mapping[str, Any], schema: dict[str, Any]) -> list[int]:
    invalid(body_problems(schema, body))
    return list(dict.fromkeys(body["ids"]))


async def _batch(ids: list[int], make: Any, after: Any) -> Response:
    """Group `ids` by account, one request each (`make(account_id, rows, refused)` → the
    payload, or None for nothing to do, or an ApiError to answer all its ids with; it may
    leave some ids out with their own answer in `refused`); each id's result as its single
    form would give it."""
    rows = await store.messages_for(st().db, ids)
    by_id = {r["id"]: r for r in rows}
    by_account: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_account[r["account_id"]].append(r)
    results: dict[int, dict[str, Any]] = {
        i: {"id": i, "status": 404, "error": {"code": "not_found", "message": f"no message with id {i}"}}
        for i in ids if i not in by_id}
    for account_id, account_rows in sorted(by_account.items()):
        refused: dict[int, ApiError] = {}  # ids `make` left out, with their answer
        try:
            payload = await make(account_id, account_rows, refused)
            outcome = await _send(account_id, payload) if payload is not None else Outcome()
        except ApiError as exc:
            for r in account_rows:
                results[r["id"]] = {"id": r["id"], "status": exc.status, "error": exc.body()["error"]}
            continue
        missing = set(outcome.missing)
        for r in account_rows:
            if r["id"] in refused:
                refusal = refused[r["id"]]
                results[r["id"]] = {"id": r["id"], "status": refusal.status, "error": refusal.body()["error"]}
                continue
            if (r["folder_id"], r["uid"]) in missing:
                results[r["id"]] = {"id": r["id"], "status": 404, "error": {
                    "code": "message_gone", "message": f"message {r['id']} is no longer on the server"}}
            else:
                results[r["id"]] = {"id": r["id"], "status": 200, **(await after(r, outcome))}
    return json_response({"results": [results[i] for i in ids]})


@api.route("POST", "/messages/flags", summary="Add and remove flags on many messages (grouped by account and "
           "folder: one UID STORE per folder)", tag="write-back", body=BATCH_FLAGS_BODY, check_body=False,
           responses={200: Resp("each id's result", BATCH_RESULT), 422: err("invalid_input", "bad ids or flags")})
async def post_batch_flags(body: dict[str, Any]) -> Response:
    add, remove = _flags(body, BATCH_FLAGS_BODY)
    ids = _ids(body, BATCH_FLAGS_BODY)

    async def make(account_id: int, rows: Sequence[dict[str, Any]], refused: dict[int, ApiError]) -> Write:
        return StoreFlags(account_id, _targets(rows), add, remove)

    async def after(row: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
        return {"message": await _after(row["id"])}

    return await _batch(ids, make, after)


@api.route("POST", "/messages/move", summary="Move many messages to the folder of that name in each one's account",
           tag="write-back", body=BATCH_MOVE_BODY,
           responses={200: Resp("each id's result (an account without that folder: 422 folder_not_found for its ids)",
                               BATCH_RESULT), 422: err("invalid_input", "bad ids or folder")})
async def post_batch_move(body: dict[str, Any]) -> Response:
    ids = _ids(body, BATCH_MOVE_BODY)
    names: dict[int, str] = {}
    there: set[int] = set()  # ids in the destination already: nothing to do, "moved": false

    async def make(account_id: int, rows: Sequence[dict[str, Any]], refused: dict[int, ApiError]) -> Write | None:
        dest = await _destination(account_id, body["folder"])
        names[account_id] = dest["name"]
        there.update(r["id"] for r in rows if r["folder_id"] == dest["id"])
        rows = [r for r in rows if r["folder_id"] != dest["id"]]
        if not rows:
            return None
        return MoveMessages(account_id, _targets(rows), dest["id"], dest["raw_name"], dest["name"],
                            not dest["excluded"])

    async def after(row: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
        answer = await _moved_answer(row["id"], outcome, names[row["account_id"]])
        if row["id"] in there:
            answer.update(moved=False, new_uid_pending=False)
        return {k: v for k, v in answer.items() if k != "id"}

    return await _batch(ids, make, after)


@api.route("POST", "/messages/delete", summary="Delete many messages: to each account's Trash, or with "
           "\"permanent\": true expunged (UID EXPUNGE of exactly those)", tag="write-back", body=BATCH_DELETE_BODY,
           responses={200: Resp("each id's result", BATCH_RESULT), 422: err("invalid_input", "bad ids")})
async def post_batch_delete(body: dict[str, Any]) -> Response:
    ids = _ids(body, BATCH_DELETE_BODY)
    permanent = bool(body.get("permanent"))
    names: dict[int, str] = {}

    async def make(account_id: int, rows: Sequence[dict[str, Any]], refused: dict[int, ApiError]) -> Write | None:
        if permanent:
            return ExpungeMessages(account_id, _targets(rows))
        trash = await _trash(account_id)
        names[account_id] = trash["name"]
        for r in rows:
            if r["folder_id"] == trash["id"]:
                refused[r["id"]] = ApiError(409, "in_trash", f"message {r['id']} is in {trash['name']!r} already; "
                                            "delete it with \"permanent\": true")
        rows = [r for r in rows if r["id"] not in refused]
        if not rows:
            return None
        return MoveMessages(account_id, _targets(rows), trash["id"], trash["raw_name"], trash["name"],
                            not trash["excluded"])

    async def after(row: dict[str, Any], outcome: Outcome) -> dict[str, Any]:
        if permanent:
            return {"moved": False, "folder": row["folder"], "message": None, "permanent": True}
        answer = await _moved_answer(row["id"], outcome, names[row["account_id"]], permanent=False)
        return {k: v for k, v in answer.items() if k != "id"}

    return await _batch(ids, make, after)


installed = True

__all__ = ["BATCH_DELETE_BODY", "BATCH_FLAGS_BODY", "BATCH_MOVE_BODY", "FLAGS_BODY", "MOVE_BODY", "installed"]
