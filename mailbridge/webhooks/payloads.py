"""What a receiver gets: one event as JSON (`id`, `type`, `account_id`, `created_at`,
`data`), as the exact bytes that are signed and sent.

A message event's `data` is the message as `GET /messages/{id}` shows it
(`mailbridge.store.api.message_json`: subject, sender, Message-ID, folder, uid, flags,
...), read when the event is delivered, plus what the event itself recorded that the
message row does not hold (a move's origin, `origin: "api"`, ...).  A message no longer
mirrored by then (and every `message_removed`) carries what the event recorded: its id,
folder, uid and Message-ID, with `"gone": true`.  Other events' `data` is what they
recorded, with the folder's name where they name a folder.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Mapping

from mailbridge.store.api import message_json

MESSAGE_EVENTS = frozenset({"message_added", "message_changed", "message_moved", "message_removed"})
# the types a webhook may ask for (`--events`, POST /webhooks "events")
KNOWN_TYPES = ("message_added", "message_changed", "message_removed", "message_moved", "messages_expired",
               "folder_added", "folder_removed", "folder_reset", "account_health", "account_health_changed")
TEST_TYPE = "webhook.test"


def _payload(event: Mapping[str, Any]) -> dict[str, Any]:
    payload = event.get("payload")
    if isinstance(payload, str):
        try:
            payload = json.loads(payload)
        except ValueError:
            payload = {"raw": payload}
    return dict(payload) if isinstance(payload, dict) else {}


def message_of(event: Mapping[str, Any]) -> int | None:
    """The message id a message event names (None: not a message event, or none named)."""
    if event["kind"] not in MESSAGE_EVENTS:
        return None
    value = _payload(event).get("message")
    return value if isinstance(value, int) else None


def event_json(event: Mapping[str, Any], messages: Mapping[int, Mapping[str, Any]],
               folders: Mapping[int, str]) -> dict[str, Any]:
    """The delivered shape of an `events` row; `messages` (id → the API's message row)
    and `folders` (id → name) hold what it refers to that is still mirrored."""
    payload = _payload(event)
    folder_id = event.get("folder_id")
    data: dict[str, Any]
    message_id = message_of(event)
    row = messages.get(message_id) if message_id is not None and event["kind"] != "message_removed" else None
    if row is not None:
        data = message_json(dict(row))
        for key, value in payload.items():
            if key != "message" and key not in data:
                data[key] = value
    elif message_id is not None:
        data = {"id": message_id, "account_id": event.get("account_id"), "folder_id": folder_id,
                "folder": folders.get(folder_id) if folder_id is not None else None}
        data.update((k, v) for k, v in payload.items() if k != "message")
        data["gone"] = True
    else:
        data = payload
        if folder_id is not None:
            data.setdefault("folder_id", folder_id)
            if folder_id in folders:
                data.setdefault("folder", folders[folder_id])
    created = event.get("created_at")
    return {"id": event["id"], "type": event["kind"], "account_id": event.get("account_id"),
            "created_at": created.isoformat() if isinstance(created, datetime) else created, "data": data}


def test_event(webhook_id: int, now: datetime) -> dict[str, Any]:
    """The `webhook.test` event `mailbridge webhooks test` sends (id 0: no event row)."""
    return {"id": 0, "type": TEST_TYPE, "account_id": None, "created_at": now.isoformat(),
            "data": {"webhook_id": webhook_id, "message": "a test delivery from mailbridge"}}


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, tuple, frozenset)):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def encode(event: Mapping[str, Any]) -> bytes:
    """The request body: compact UTF-8 JSON."""
    return json.dumps(event, default=_default, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


__all__ = ["KNOWN_TYPES", "MESSAGE_EVENTS", "TEST_TYPE", "encode", "event_json", "message_of", "test_event"]
