"""The HTTP API: `create_app(registry, db, settings)` → a QuartTrio app.

Routes live in `web.routes` (each declared with its schemas, see `web.schema`); this
module wires them up with bearer-token auth (or, without a token, the loopback-only
checks of `web.guard`), JSON errors, metrics and the drain switch
`web.server` flips on shutdown.  What both share lives below them: `web.state` (the
`WebState` every handler reads) and `web.responses` (JSON and error responses).  web/ reaches the database only through
`mailbridge.store` and `mailbridge.accountops`, and the actors only through the
registry.
"""

from __future__ import annotations

import hmac
import logging
from typing import Any

import trio
from quart import Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from actors.registry import Registry
from mailbridge.config import Settings
from mailbridge.errors import (
    AccountNotFound,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    InvalidInput,
    MailbridgeError,
)
from web import metrics
from web.dashboard import TOKEN_PARAM, unauthorized_page, wants_html
from web.guard import Refusal, check_content_type, check_cross_site, check_host
from web.responses import error_response, json_response
from web.routes import api
from web.emails import installed as _email_routes  # noqa: F401  (GET /emails/{email_id} on `api`)
from web.writeback import installed as _writeback_routes  # noqa: F401  (flags, move, delete on `api`)
from web.webhooks import installed as _webhook_routes  # noqa: F401  (GET|POST|DELETE /webhooks on `api`)
from web.schema import ApiError
from web.state import WebState

log = logging.getLogger("mailbridge.web")

MAX_BODY = 64 * 1024  # JSON request bodies are small
MAX_EVENT_STREAMS = 64  # concurrent GET /events streams; past it 503 with Retry-After
QUERY_TOKEN_PATHS = frozenset({"/", "/events"})  # browsers: navigation and EventSource send no header


def _refused(refusal: Refusal) -> Response:
    return error_response(refusal.status, refusal.code, refusal.message)


def create_app(registry: Registry, db: Any, settings: Settings, *, require_token: bool | None = None,
               body_timeout: float = 20.0, max_event_streams: int = MAX_EVENT_STREAMS) -> QuartTrio:
    """The API app.  `require_token` defaults to "a token is configured"; with False the
    caller binds to loopback only and a request needs no token, but it must be addressed
    to loopback and not come from another origin's page (see `web.guard`)."""
    if require_token is None:
        require_token = settings.api_token is not None
    if require_token and not settings.api_token:
        raise ConfigError("MAILBRIDGE_API_TOKEN is not set, so the API cannot require a bearer token")
    token = (settings.api_token or "").encode("utf-8")

    app = QuartTrio("mailbridge.web")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY, RESPONSE_TIMEOUT=120, BODY_TIMEOUT=30,
                      PROVIDE_AUTOMATIC_OPTIONS=False)
    state = WebState(registry=registry, db=db, settings=settings, require_token=require_token,
                     body_timeout=body_timeout, max_event_streams=max_event_streams)
    app.extensions["mailbridge"] = state
    api.install(app)

    def _given_token() -> str | None:
        """The token the request offers (None: none).  The Authorization header wins;
        `access_token` in the query (RFC 6750 §2.3) is read only for the GET paths a
        browser cannot send a header to (the dashboard and its event stream).  Never
        logged, never echoed."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, given = header.partition(" ")
            return given.strip() if scheme.lower() == "bearer" else None
        if request.method == "GET" and request.path in QUERY_TOKEN_PATHS:
            values = request.args.getlist(TOKEN_PARAM)
            if len(values) == 1:
                return values[0]
        return None

    @app.before_request
    async def _guard() -> Response | None:
        g.started = trio.current_time()
        if state.draining:
            return error_response(503, "shutting_down", "mailbridge is shutting down; try again shortly",
                                  headers={"Retry-After": "5", "Connection": "close"})
        if not state.require_token:
            server_port = request.server[1] if request.server else None
            host = request.headers.get("Host")
            refusal = check_host(host, server_port) or check_cross_site(
                request.method, request.path, host, request.headers.get("Origin"),
                request.headers.get("Sec-Fetch-Site"), request.headers.get("Sec-Fetch-Mode"),
                request.headers.get("Sec-Fetch-Dest"))
            return _refused(refusal) if refusal is not None else _body_type()
        if request.path == "/health":
            return None
        given = _given_token()
        ok = given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), token)
        if not ok:
            if request.path == "/" and request.method == "GET" and wants_html(request.headers.get("Accept", "")):
                page = unauthorized_page(rejected=given is not None)  # a browser: ask for the token
                page.headers["WWW-Authenticate"] = 'Bearer realm="mailbridge"'
                return page
            return error_response(401, "unauthorized",
                                  "missing or wrong bearer token (Authorization: Bearer $MAILBRIDGE_API_TOKEN)",
                                  headers={"WWW-Authenticate": 'Bearer realm="mailbridge"'})
        return _body_type()

    def _body_type() -> Response | None:
        """415 for a write to a route whose body is not declared JSON (unmatched paths are
        left to routing: 404/405)."""
        if request.url_rule is None:
            return None
        refusal = check_content_type(request.method, request.headers.get("Content-Type"),
                                     request.content_length, "chunked" in request.headers.get(
                                         "Transfer-Encoding", "").lower())
        return _refused(refusal) if refusal is not None else None

    @app.after_request
    async def _count(response: Response) -> Response:
        rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.HTTP_REQUESTS.labels(metrics.method_label(request.method), rule, str(response.status_code)).inc()
        started = g.get("started")
        if started is not None:
            metrics.HTTP_SECONDS.labels(rule).observe(max(0.0, trio.current_time() - started))
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    @app.errorhandler(ApiError)
    async def _api_error(exc: ApiError) -> Response:
        return json_response(exc.body(), exc.status, exc.headers)

    @app.errorhandler(HTTPException)
    async def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        headers = {}
        if exc.code == 405 and exc.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
        return error_response(exc.code or 500, code, exc.description or exc.name, headers=headers)

    @app.errorhandler(AccountNotFound)
    async def _no_account(exc: AccountNotFound) -> Response:
        return error_response(404, "not_found", str(exc).split(": see `")[0])  # no CLI hint over HTTP

    @app.errorhandler(InvalidInput)
    async def _invalid(exc: InvalidInput) -> Response:
        return error_response(422, "invalid_input", str(exc), exc.fields)

    @app.errorhandler(DatabaseUnavailable)
    async def _db_down(exc: DatabaseUnavailable) -> Response:
        return error_response(503, "database_unavailable", f"the database is unavailable: {exc}",
                              headers={"Retry-After": "5"})

    @app.errorhandler(Exception)
    async def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, ConfigError):
            return error_response(503, "misconfigured", str(exc))
        if isinstance(exc, DatabaseError):
            log.error("database error answering %s %s: %s", request.method, request.path, exc)
            return error_response(500, "database_error", "the database refused the request; see the server log")
        if isinstance(exc, MailbridgeError):
            log.error("error answering %s %s: %s", request.method, request.path, exc)
            return error_response(500, "internal", str(exc))
        log.exception("unexpected error answering %s %s", request.method, request.path)
        return error_response(500, "internal", "internal error; see the server log")

    return app


__all__ = ["create_app"]
