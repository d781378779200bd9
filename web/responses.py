"""JSON responses of the API: a value as JSON text, and the one shape of an error."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from quart import Response


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """`data` as UTF-8 JSON; datetimes as ISO 8601, bytes as text, sets and tuples as lists."""
    text = json.dumps(data, default=_default, ensure_ascii=False)
    return Response(text, status=status, headers=headers or {}, content_type="application/json; charset=utf-8")


def _printable(text: str) -> str:
    """`text` with control characters and lone surrogates escaped (client input such as
    a field name may carry them; an error must still be clean JSON text)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def error_response(status: int, code: str, message: str, fields: dict[str, str] | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    """`{"error": {"code", "message", "fields"}}` with `status`; every text made printable."""
    clean = {_printable(str(k)): _printable(str(v)) for k, v in (fields or {}).items()}
    return json_response({"error": {"code": code, "message": _printable(message), "fields": clean}},
                         status, headers)


__all__ = ["error_response", "json_response"]
