"""The webhook routes (`GET|POST /webhooks`, `GET|DELETE /webhooks/{id}`), declared on
the API's one `Api` (so they are in /openapi.json and behind the same auth).  Secrets go
in, never out."""

from __future__ import annotations

from typing import Any

from quart import Response

from mailbridge.errors import InvalidInput, WebhookNotFound
from mailbridge.store import webhooks as store
from mailbridge.webhooks import manage
from mailbridge.webhooks.payloads import KNOWN_TYPES
from web.responses import json_response
from web.routes import api, err, st
from web.schema import COMPONENTS, DATE_TIME, NULL_DATE_TIME, ApiError, Response as Resp, body_problems, invalid, \
    nullable, ref

NEW_WEBHOOK = {
    "type": "object", "required": ["url", "secret"], "additionalProperties": False,
    "properties": {
        "url": {"type": "string", "minLength": 1, "maxLength": manage.MAX_URL,
                "description": "the receiver's http:// or https:// URL (redirects are not followed)"},
        "secret": {"type": "string", "minLength": 1, "maxLength": manage.MAX_SECRET,
                   "description": "HMAC-SHA256 key of the Mailbridge-Signature header; stored encrypted, never shown"},
        "events": {"type": ["array", "null"], "minItems": 1, "maxItems": len(KNOWN_TYPES),
                   "items": {"type": "string", "enum": list(KNOWN_TYPES)},
                   "description": "only these event types (left out or null: every type)"},
    },
}

COMPONENTS.setdefault("Webhook", {
    "type": "object", "required": ["id", "url", "events", "enabled", "state", "parked"],
    "properties": {
        "id": {"type": "integer"}, "url": {"type": "string"},
        "events": {"type": ["array", "null"], "items": {"type": "string"}},
        "enabled": {"type": "boolean"}, "created_at": DATE_TIME,
        "state": {"type": "string", "enum": ["ok", "failing", "parked", "disabled"]},
        "lag": {"type": "integer", "description": "events not yet delivered"},
        "last_event_id": nullable("integer"), "delivered": {"type": "integer"},
        "attempts": {"type": "integer", "description": "failed attempts at the event due now"},
        "failures": {"type": "integer", "description": "failed attempts in all"},
        "failing_since": NULL_DATE_TIME, "next_attempt_at": NULL_DATE_TIME,
        "last_status": nullable("integer"), "last_error": nullable("string"),
        "last_attempt_at": NULL_DATE_TIME, "last_delivered_at": NULL_DATE_TIME,
        "parked": {"type": "boolean"}, "parked_at": NULL_DATE_TIME, "owner": nullable("string"),
    },
    "additionalProperties": False,
})


def _not_found(webhook_id: int) -> ApiError:
    return ApiError(404, "not_found", f"no webhook with id {webhook_id}")


@api.route("GET", "/webhooks", summary="Every webhook with its delivery state (never its secret)", tag="webhooks",
           responses={200: Resp("webhooks", {"type": "object", "required": ["webhooks"], "properties": {
               "webhooks": {"type": "array", "items": ref("Webhook")}}})})
async def list_webhooks() -> Response:
    db = st().db
    hooks = await store.list_all(db)
    return json_response({"webhooks": [h.to_json(lag=await store.lag(db, h)) for h in hooks]})


@api.route("POST", "/webhooks",
           summary="Add a webhook: each event committed from now on is POSTed to `url` as JSON, signed with "
                   "`secret` (Mailbridge-Signature: t=UNIX_SECONDS,v1=HEX)", tag="webhooks",
           body=NEW_WEBHOOK, check_body=False,
           responses={201: Resp("added", ref("Webhook")),
                      422: err("invalid_input", "a bad url, secret or event type")})
async def create_webhook(body: dict[str, Any]) -> Response:
    state = st()
    problems = body_problems(NEW_WEBHOOK, body)
    try:
        manage.check(body.get("url"), body.get("secret"), body.get("events"))
    except InvalidInput as exc:
        for key, value in exc.fields.items():
            problems.setdefault(key, value)
    invalid(problems)
    webhook_id = await manage.add(state.db, state.settings, body["url"], body["secret"], body.get("events"))
    return json_response(await manage.show(state.db, webhook_id), 201, {"Location": f"/webhooks/{webhook_id}"})


@api.route("GET", "/webhooks/{id}",
           summary="One webhook's delivery state: lag (events not yet delivered), last status, failures, parked, "
                   "last error", tag="webhooks", responses={200: Resp("the webhook", ref("Webhook"))})
async def get_webhook(id: int) -> Response:
    try:
        return json_response(await manage.show(st().db, id))
    except WebhookNotFound:
        raise _not_found(id) from None


@api.route("DELETE", "/webhooks/{id}", summary="Remove a webhook (its deliveries stop)", tag="webhooks",
           responses={204: Resp("removed")})
async def delete_webhook(id: int) -> Response:
    try:
        await store.delete(st().db, id)
    except WebhookNotFound:
        raise _not_found(id) from None
    return Response("", status=204)


installed = True

__all__ = ["NEW_WEBHOOK", "installed"]
