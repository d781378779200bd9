"""`GET /emails/{email_id}`: every mirrored copy of one message (its folders), declared on
the API's one `Api` (so it is in /openapi.json and behind the same auth)."""

from __future__ import annotations

from typing import Any

from quart import Response

from mailbridge.store import moves as store
from mailbridge.store.api import message_json
from web.responses import json_response
from web.routes import api, st
from web.schema import ApiError, Query, Response as Resp, ref

EMAIL_QUERY = (Query("account", "integer", "only this account's copies (an email_id is unique per account; "
                     "a derived one is shared by one message delivered to several accounts)",
                     minimum=1, maximum=2**63 - 1),)


@api.route("GET", "/emails/{email_id}",
           summary="Every mirrored copy of a message, by its email_id (the server's X-GM-MSGID or RFC 8474 "
                   "EMAILID, else mailbridge's derived `mb-…` id): one per folder holding it",
           tag="messages", query=EMAIL_QUERY, string_params=("email_id",),
           responses={200: Resp("the copies", {
               "type": "object", "required": ["email_id", "messages"], "additionalProperties": False,
               "properties": {"email_id": {"type": "string"},
                              "messages": {"type": "array", "minItems": 1, "items": ref("Message")}}})})
async def get_email(email_id: str, query: dict[str, Any]) -> Response:
    rows = await store.copies(st().db, email_id, query["account"])
    if not rows:
        raise ApiError(404, "not_found", "no message with this email_id is mirrored")
    return json_response({"email_id": email_id, "messages": [message_json(r) for r in rows]})


installed = True

__all__ = ["installed"]
