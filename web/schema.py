"""Route schemas declared next to each route, the checks they imply, and /openapi.json.

A route is declared once with `@api.route(...)`: its path (OpenAPI style, `{id}`), its
query parameters (`Query`), its JSON body schema and its responses' schemas.  From that
one declaration come the Quart route, the query-parameter parsing (400 naming each bad
parameter), the body validation (422 naming each bad field) and the OpenAPI document.

JSON schemas here use the subset `validate()` understands: type (a name or a list of
names, "null" included), properties, required, additionalProperties, items, enum,
minimum, maximum, minLength, maxLength, format "date-time", and `$ref` to
`#/components/schemas/...`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timezone
from typing import Any, Awaitable, Callable, NoReturn

from quart import Quart, request

MAX_ID = 2**63 - 1
_INT = re.compile(r"^[+-]?\d{1,20}$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class ApiError(Exception):
    """An error answered as `{"error": {"code", "message", "fields"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, fields: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "fields": self.fields}}


# --- parameters -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    """One query parameter."""

    name: str
    type: str                       # integer, boolean, string, date-time
    description: str = ""
    minimum: int | None = None
    maximum: int | None = None
    default: Any = None
    max_length: int | None = 500
    enum: tuple[str, ...] | None = None

    def schema(self) -> dict[str, Any]:
        if self.type == "date-time":
            return {"type": "string", "format": "date-time",
                    "description": "RFC 3339 date-time, or a date (midnight UTC)"}
        out: dict[str, Any] = {"type": self.type}
        if self.minimum is not None:
            out["minimum"] = self.minimum
        if self.maximum is not None:
            out["maximum"] = self.maximum
        if self.default is not None:
            out["default"] = self.default
        if self.type == "string" and self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.enum is not None:
            out["enum"] = list(self.enum)
        return out

    def parse(self, raw: str) -> Any:
        """The value of `raw`, or ValueError with the reason."""
        if self.type == "integer":
            text = raw.strip()
            if not _INT.match(text):
                raise ValueError("must be a whole number")
            value = int(text)
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"must be at least {self.minimum}")
            if self.maximum is not None and value > self.maximum:
                raise ValueError(f"must be at most {self.maximum}")
            return value
        if self.type == "boolean":
            text = raw.strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("must be true or false")
        if self.type == "date-time":
            return parse_datetime(raw)
        check_text(raw)
        if self.max_length is not None and len(raw) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters")
        if self.enum is not None and raw not in self.enum:
            raise ValueError("must be one of " + ", ".join(self.enum))
        return raw


def check_text(value: str) -> None:
    """Text Postgres can store: no NUL, valid UTF-8 (no lone surrogates)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None


def parse_datetime(raw: str) -> datetime:
    """RFC 3339 / ISO 8601 date-time (naive = UTC) or a date (midnight UTC), as UTC."""
    text = raw.strip()
    if not text or len(text) > 40:
        raise ValueError("must be a date (2024-05-01) or date-time (2024-05-01T12:00:00Z)")
    try:
        if len(text) == 10:
            value = datetime.combine(date.fromisoformat(text), time(), timezone.utc)
        else:
            value = datetime.fromisoformat(text.replace("z", "Z"))
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        raise ValueError("must be a date (2024-05-01) or date-time (2024-05-01T12:00:00Z)") from None


@dataclass(frozen=True, slots=True)
class PathParam:
    name: str
    description: str = ""
    type: str = "integer"  # or "string" (a route's `string_params`: any text without "/")

    def schema(self) -> dict[str, Any]:
        if self.type == "string":
            return {"type": "string", "minLength": 1, "maxLength": MAX_PATH_TEXT}
        return {"type": "integer", "minimum": 1, "maximum": MAX_ID}

    def valid(self, value: Any) -> bool:
        if self.type == "string":
            return isinstance(value, str) and 1 <= len(value) <= MAX_PATH_TEXT
        return isinstance(value, int) and 1 <= value <= MAX_ID


MAX_PATH_TEXT = 200  # longest text path parameter


# --- routes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    description: str
    schema: dict[str, Any] | None = None
    content_type: str = "application/json"
    alternatives: tuple[tuple[str, dict[str, Any]], ...] = ()  # (content type, schema): other answers


@dataclass
class Operation:
    method: str
    path: str
    summary: str
    handler: Callable[..., Awaitable[Any]]
    query: tuple[Query, ...] = ()
    path_params: tuple[PathParam, ...] = ()
    body: dict[str, Any] | None = None
    responses: dict[int, Response] = field(default_factory=dict)
    auth: bool = True
    tag: str = "mailbridge"
    check_body: bool = True

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def quart_rule(self) -> str:
        kinds = {p.name: "string" if p.type == "string" else "int" for p in self.path_params}
        return re.sub(r"\{(\w+)\}", lambda m: f"<{kinds.get(m.group(1), 'int')}:{m.group(1)}>", self.path)


class Api:
    """Collects the declared operations; `install(app)` adds them to a Quart app."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(self, method: str, path: str, *, summary: str, query: tuple[Query, ...] = (),
              body: dict[str, Any] | None = None, responses: dict[int, Response] | None = None,
              auth: bool = True, tag: str = "mailbridge", check_body: bool = True,
              string_params: tuple[str, ...] = ()) -> Callable:
        """Declare a route.  With `check_body=False` the handler gets the parsed JSON body
        unchecked and merges `body_problems(...)` with its own checks (one 422 for all)."""
        params = tuple(PathParam(n, type="string" if n in string_params else "integer")
                       for n in re.findall(r"\{(\w+)\}", path))

        def decorate(fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            self.operations.append(Operation(method.upper(), path, summary, fn, tuple(query), params, body,
                                             dict(responses or {}), auth, tag, check_body))
            return fn

        return decorate

    def install(self, app: Quart) -> None:
        for op in self.operations:
            app.add_url_rule(op.quart_rule, endpoint=f"{op.method.lower()}_{op.operation_id}",
                             view_func=_view(op), methods=[op.method])

    def openapi(self, *, title: str, version: str) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for op in self.operations:
            parameters = [{"name": p.name, "in": "path", "required": True, "schema": p.schema()}
                          for p in op.path_params]
            parameters += [{"name": q.name, "in": "query", "required": False,
                            "description": q.description, "schema": q.schema()} for q in op.query]
            entry: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag],
                                     "parameters": parameters, "responses": {}}
            if op.body is not None:
                entry["requestBody"] = {"required": True,
                                        "content": {"application/json": {"schema": op.body}}}
            for status, resp in sorted(op.responses.items()):
                item: dict[str, Any] = {"description": resp.description}
                if resp.schema is not None:
                    item["content"] = {resp.content_type: {"schema": resp.schema}}
                    for content_type, schema in resp.alternatives:
                        item["content"][content_type] = {"schema": schema}
                entry["responses"][str(status)] = item
            common: dict[int, str] = {}
            if op.query:
                common[400] = "invalid query parameter"
            if op.path_params:
                common[404] = "not found"
            if op.body is not None:
                common[400] = "the body is not a JSON object"
                common[413] = "the body is too large"
                common[422] = "invalid fields (each named in error.fields)"
            if op.body is not None or op.method in ("POST", "PUT", "PATCH"):
                common[415] = "the body is not sent as Content-Type: application/json"
            # without MAILBRIDGE_API_TOKEN (loopback only): see web.guard
            common[403] = "a request from another origin's web page (only without MAILBRIDGE_API_TOKEN)"
            common[421] = "a Host other than loopback with this port (only without MAILBRIDGE_API_TOKEN)"
            if op.auth:
                common[401] = "missing or wrong bearer token"
            for status, text in common.items():
                entry["responses"].setdefault(str(status), {
                    "description": text,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
            if not op.auth:
                entry["security"] = []
            paths.setdefault(op.path, {})[op.method.lower()] = entry
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": version},
            "components": {
                "schemas": COMPONENTS,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
            "paths": paths,
        }


def _view(op: Operation) -> Callable[..., Awaitable[Any]]:
    async def view(**kwargs: Any) -> Any:
        for p in op.path_params:
            value = kwargs.get(p.name)
            if not p.valid(value):
                raise ApiError(404, "not_found", f"no such {p.name}: {value}")
        if op.query:
            kwargs["query"] = parse_query(op.query)
        if op.body is not None:
            kwargs["body"] = await read_body(op.body, check=op.check_body)
        return await op.handler(**kwargs)

    view.__name__ = op.operation_id
    return view


def parse_query(declared: tuple[Query, ...]) -> dict[str, Any]:
    """The declared query parameters of the current request (defaults filled in);
    ApiError 400 naming every bad one."""
    out: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for q in declared:
        values = request.args.getlist(q.name)
        if not values or (values == [""] and q.type != "string"):
            out[q.name] = q.default
            continue
        if len(values) > 1:
            problems[q.name] = "must be given at most once"
            continue
        try:
            out[q.name] = q.parse(values[0])
        except ValueError as exc:
            problems[q.name] = str(exc)
    if problems:
        raise ApiError(400, "invalid_query", "invalid query: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
                       problems)
    return out


async def read_body(schema: dict[str, Any], *, check: bool = True) -> Any:
    """The request's JSON body checked against `schema`: 400 if not JSON, 422 naming
    every bad field."""
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    try:
        value = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object") from None
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_json", "the request body must be a JSON object")
    if check:
        invalid(body_problems(schema, value))
    return value


def body_problems(schema: dict[str, Any], value: Any) -> dict[str, str]:
    """field → problem, for a 422."""
    out: dict[str, str] = {}
    for path, message in validate(schema, value):
        out.setdefault(path or "body", message)
    return out


def invalid(fields: dict[str, str]) -> None:
    """Raise the 422 naming every bad field (nothing when `fields` is empty)."""
    if fields:
        reject(fields)


def reject(fields: dict[str, str]) -> NoReturn:
    """Raise the 422 naming every bad field in `fields` (which names at least one)."""
    raise ApiError(422, "invalid_input",
                   "invalid input: " + "; ".join(f"{k}: {v}" for k, v in fields.items()), fields)


# --- JSON schema subset -----------------------------------------------------------------

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/components/schemas/"
    if not ref.startswith(prefix) or ref[len(prefix):] not in COMPONENTS:
        raise KeyError(f"unknown $ref {ref}")
    return COMPONENTS[ref[len(prefix):]]


def validate(schema: dict[str, Any], value: Any, path: str = "") -> list[tuple[str, str]]:
    """Problems of `value` against `schema` as (path, message) pairs; empty when valid."""
    schema = resolve(schema)
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else list(types)
        if not any(_TYPES[n](value) for n in names):
            return [(path, "must be " + " or ".join(names))]
    problems: list[tuple[str, str]] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append((path, "must be one of " + ", ".join(map(str, schema["enum"]))))
    if isinstance(value, str):
        try:
            check_text(value)
        except ValueError as exc:
            problems.append((path, str(exc)))
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append((path, f"must be at least {schema['minLength']} characters"))
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append((path, f"must be at most {schema['maxLength']} characters"))
        if schema.get("format") == "date-time":
            try:
                datetime.fromisoformat(value)
            except ValueError:
                problems.append((path, "must be an ISO 8601 date-time"))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append((path, f"must be at least {schema['minimum']}"))
        if "maximum" in schema and value > schema["maximum"]:
            problems.append((path, f"must be at most {schema['maximum']}"))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                problems.append((_join(path, name), "is required"))
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if name in props:
                problems += validate(props[name], item, _join(path, name))
            elif extra is False:
                problems.append((_join(path, name), "is not a known field"))
            elif isinstance(extra, dict):
                problems += validate(extra, item, _join(path, name))
    if isinstance(value, list) and "items" in schema:
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append((path, f"must have at most {schema['maxItems']} items"))
        for i, item in enumerate(value):
            problems += validate(schema["items"], item, f"{path}[{i}]")
    return problems


def _join(path: str, name: str) -> str:
    """`path.name`, the name escaped (as Python writes it) when it holds control
    characters or lone surrogates: problems are echoed in the error message."""
    name = str(name)
    if not name.isprintable() or not _encodable(name):
        name = repr(name)
    return f"{path}.{name}" if path else name


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- shared component schemas -----------------------------------------------------------


def nullable(kind: str, **extra: Any) -> dict[str, Any]:
    return {"type": [kind, "null"], **extra}


DATE_TIME = {"type": "string", "format": "date-time"}
NULL_DATE_TIME = {"type": ["string", "null"], "format": "date-time"}
STRINGS = {"type": "array", "items": {"type": "string"}}

COMPONENTS: dict[str, dict[str, Any]] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {
            "type": "object", "required": ["code", "message", "fields"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}},
    },
    "Account": {
        "type": "object",
        "required": ["id", "email", "imap_host", "imap_port", "imap_tls", "imap_username", "enabled", "health"],
        "properties": {
            "id": {"type": "integer"}, "email": {"type": "string"}, "imap_host": {"type": "string"},
            "imap_port": {"type": "integer"}, "imap_tls": {"type": "string", "enum": ["tls", "starttls", "none"]},
            "imap_username": {"type": "string"}, "verify_certificate": {"type": "boolean"},
            "enabled": {"type": "boolean"}, "health": {"type": "string"},
            "health_reason": nullable("string"), "health_changed_at": DATE_TIME,
            "owner": nullable("string"), "heartbeat_at": NULL_DATE_TIME,
            "excluded_folders": {"type": ["array", "null"], "items": {"type": "string"}},
            "credentials_changed_at": DATE_TIME, "created_at": DATE_TIME, "updated_at": DATE_TIME,
            "actor_state": nullable("string"),
            "auth_kind": {"type": "string", "enum": ["password", "oauth2"]},
            "oauth2_client": nullable("string"),
        },
        "additionalProperties": False,
    },
    "OAuth2Client": {
        "type": "object", "required": ["id", "name", "token_url", "client_id", "scopes"],
        "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "token_url": {"type": "string"},
            "authorize_url": nullable("string"), "client_id": {"type": "string"}, "scopes": {"type": "string"},
            "created_at": DATE_TIME,
        },
        "additionalProperties": False,
    },
    "Folder": {
        "type": "object", "required": ["id", "name", "messages", "unread"],
        "properties": {
            "id": {"type": "integer"}, "name": {"type": "string"}, "delimiter": nullable("string"),
            "special_use": nullable("string"), "uidvalidity": nullable("integer"),
            "excluded": {"type": "boolean"}, "is_priority": {"type": "boolean"},
            "initial_sync_complete": {"type": "boolean"}, "last_synced_at": NULL_DATE_TIME,
            "server_message_count": nullable("integer"), "parked": {"type": "boolean"},
            "parked_reason": nullable("string"), "exists_on_server": {"type": "boolean"},
            "gmail_view": nullable("string"),
            "messages": {"type": "integer"}, "unread": {"type": "integer"},
        },
    },
    "Message": {
        "type": "object",
        "required": ["id", "account_id", "folder_id", "folder", "uid", "flags", "unread", "flagged"],
        "properties": {
            "id": {"type": "integer"}, "account_id": {"type": "integer"}, "folder_id": {"type": "integer"},
            "folder": {"type": "string"}, "uid": {"type": "integer"}, "message_id": nullable("string"),
            "subject": nullable("string"), "from_name": nullable("string"), "from_email": nullable("string"),
            "to_emails": STRINGS, "cc_emails": STRINGS, "sent_at": NULL_DATE_TIME,
            "internal_date": NULL_DATE_TIME, "size_bytes": nullable("integer"), "flags": STRINGS,
            "unread": {"type": "boolean"}, "flagged": {"type": "boolean"},
            "in_reply_to": nullable("string"), "references": STRINGS,
            "provider_thread_id": nullable("string"), "parent_id": nullable("integer"),
            "email_id": nullable("string"), "labels": {"type": ["array", "null"], "items": {"type": "string"}},
        },
    },
    "ActorStatus": {
        "type": "object", "required": ["account_id", "state", "health", "mailbox_depth"],
        "properties": {
            "account_id": {"type": "integer"}, "email": {"type": "string"}, "state": {"type": "string"},
            "health": {"type": "string"}, "health_reason": nullable("string"), "step": {"type": "string"},
            "folder": nullable("string"),
            "folders": {"type": "array", "items": {
                "type": "object", "required": ["name", "phase", "synced"],
                "properties": {"name": {"type": "string"}, "phase": {"type": "string"},
                               "synced": {"type": "integer"}, "total": nullable("integer")}}},
            "lock_held": {"type": "boolean"}, "owner": nullable("string"), "restarts": {"type": "integer"},
            "last_error": nullable("string"), "mailbox_depth": {"type": "integer"},
            "retry_at": NULL_DATE_TIME, "next_cycle_at": NULL_DATE_TIME,
            "started_at": DATE_TIME, "updated_at": DATE_TIME,
        },
    },
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = ref("Error")
