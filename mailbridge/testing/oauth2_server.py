"""A local OAuth2 authorization server for tests (authlib on Flask, in a thread).

`OAuth2TestServer` issues short-lived access tokens (`access_lifetime` seconds) and
refresh tokens for one registered client, with:

- ``POST /token``: grants ``refresh_token`` and ``authorization_code`` (PKCE required, S256);
- ``GET /authorize``: approves at once (no login page) for the user named by ``login_hint``
  (else `default_user`) and redirects to the client's redirect URI with the code;
- ``POST /introspect``: RFC 7662 (what Dovecot's oauth2 passdb asks), answering
  ``{"active": true, "username": ...}`` for a live access token, ``{"active": false}`` else.

Tests mint a refresh token (`issue_refresh_token`), revoke one (`revoke`), and read how
many refreshes were asked (`refresh_attempts`) and granted (`refreshes`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import OAuth2Error, grants
from authlib.oauth2.rfc7636 import CodeChallenge
from flask import Flask, jsonify, request
from werkzeug.serving import make_server

logging.getLogger("werkzeug").setLevel(logging.WARNING)


@dataclass
class _User:
    username: str

    def get_user_id(self) -> str:
        return self.username


@dataclass
class _Client:
    client_id: str
    client_secret: str
    scope: str

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return None

    def get_allowed_scope(self, scope: str) -> str:
        return scope or self.scope

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri.startswith(("http://127.0.0.1:", "http://localhost:"))

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_post", "client_secret_basic")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("authorization_code", "refresh_token")


@dataclass
class _Token:
    client_id: str
    user: _User
    scope: str
    access_token: str
    refresh_token: str | None
    expires_at: float
    revoked: bool = False

    def check_client(self, client: _Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at

    def is_revoked(self) -> bool:
        return self.revoked

    def get_user(self) -> _User:
        return self.user

    def get_client(self) -> None:
        return None


@dataclass
class _Code:
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: _User
    code_challenge: str | None
    code_challenge_method: str | None
    created: float = field(default_factory=time.time)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_code_challenge(self) -> str | None:
        return self.code_challenge

    def get_code_challenge_method(self) -> str | None:
        return self.code_challenge_method

    def get_nonce(self) -> None:
        return None

    def get_auth_time(self) -> None:
        return None


class OAuth2TestServer:
    """See the module docstring.  Use as a context manager (starts, then stops)."""

    def __init__(self, *, access_lifetime: int = 5, rotate_refresh_tokens: bool = False,
                 default_user: str = "", scope: str = "imap") -> None:
        self.access_lifetime = access_lifetime
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.default_user = default_user
        self.client = _Client("mailbridge-test", secrets.token_urlsafe(16), scope)
        self.refresh_attempts = 0  # refresh_token grant requests received
        self.refreshes = 0  # refresh_token grants answered with a new access token
        self.introspections = 0
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}  # access token → token
        self._refresh: dict[str, _Token] = {}  # refresh token → its latest token
        self._codes: dict[str, _Code] = {}
        self._app = self._make_app()
        self._http: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- addresses ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_url(self) -> str:
        return self.base_url + "/token"

    @property
    def authorize_url(self) -> str:
        return self.base_url + "/authorize"

    @property
    def introspection_url(self) -> str:
        return self.base_url + "/introspect"

    # --- test controls -----------------------------------------------------------------

    def issue_refresh_token(self, username: str) -> str:
        """A new refresh token for `username` (its access token is already expired)."""
        refresh = secrets.token_urlsafe(24)
        token = _Token(self.client.client_id, _User(username), self.client.scope,
                       secrets.token_urlsafe(24), refresh, time.time() - 1)
        with self._lock:
            self._refresh[refresh] = token
        return refresh

    def revoke(self, refresh_token: str) -> None:
        """Revoke a refresh token and the access tokens issued from it."""
        with self._lock:
            for token in list(self._tokens.values()) + list(self._refresh.values()):
                if token.refresh_token == refresh_token:
                    token.revoked = True

    def secrets_issued(self) -> list[str]:
        """Every token and the client secret (for checking that no output holds one)."""
        with self._lock:
            out = [self.client.client_secret, *self._tokens, *self._refresh]
        return out

    # --- the app -----------------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask("mailbridge-oauth2-test")
        app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
        app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"authorization_code": self.access_lifetime,
                                                 "refresh_token": self.access_lifetime}
        server = AuthorizationServer(app, query_client=self._query_client, save_token=self._save_token)
        outer = self

        class CodeGrant(grants.AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, request: Any) -> None:
                params = request.payload if hasattr(request, "payload") else request  # authlib ≥ 1.6
                data = params.data
                with outer._lock:
                    outer._codes[code] = _Code(code, request.client.client_id, params.redirect_uri,
                                               request.scope or outer.client.scope, request.user,
                                               data.get("code_challenge"), data.get("code_challenge_method"))

            def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
                with outer._lock:
                    item = outer._codes.get(code)
                if item is not None and item.client_id == client.client_id and time.time() - item.created < 300:
                    return item
                return None

            def delete_authorization_code(self, authorization_code: _Code) -> None:
                with outer._lock:
                    outer._codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: _Code) -> _User:
                return authorization_code.user

        class RefreshGrant(grants.RefreshTokenGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
            INCLUDE_NEW_REFRESH_TOKEN = self.rotate_refresh_tokens

            def authenticate_refresh_token(self, refresh_token: str) -> _Token | None:
                with outer._lock:
                    outer.refresh_attempts += 1
                    token = outer._refresh.get(refresh_token)
                if token is None or token.revoked:
                    return None
                return token

            def authenticate_user(self, refresh_token: _Token) -> _User:
                return refresh_token.user

            def revoke_old_credential(self, refresh_token: _Token) -> None:
                if outer.rotate_refresh_tokens:
                    refresh_token.revoked = True

        server.register_grant(CodeGrant, [CodeChallenge(required=True)])
        server.register_grant(RefreshGrant)

        @app.post("/token")
        def token() -> Any:
            return server.create_token_response()

        @app.get("/authorize")
        def authorize() -> Any:
            user = _User(request.args.get("login_hint") or outer.default_user)
            try:
                grant = server.get_consent_grant(end_user=user)
            except OAuth2Error:
                grant = None  # the error response comes from authlib's own path below
            return server.create_authorization_response(grant_user=user, grant=grant)

        @app.post("/introspect")
        def introspect() -> Any:
            value = request.form.get("token", "")
            with outer._lock:
                outer.introspections += 1
                item = outer._tokens.get(value)
            if item is None or item.revoked or item.is_expired():
                return jsonify({"active": False})
            return jsonify({"active": True, "username": item.user.username, "scope": item.scope,
                            "client_id": item.client_id, "exp": int(item.expires_at), "token_type": "Bearer"})

        return app

    def _query_client(self, client_id: str) -> _Client | None:
        return self.client if client_id == self.client.client_id else None

    def _save_token(self, token: dict[str, Any], request: Any) -> None:
        refresh = token.get("refresh_token")
        previous = request.refresh_token if getattr(request, "refresh_token", None) is not None else None
        if refresh is None and previous is not None:
            refresh = previous.refresh_token  # not rotated: the old one stays valid
        item = _Token(request.client.client_id, request.user, token.get("scope", ""),
                      token["access_token"], refresh, time.time() + int(token.get("expires_in", 0)))
        with self._lock:
            self._tokens[item.access_token] = item
            if refresh is not None:
                self._refresh[refresh] = item
            if request.payload.grant_type == "refresh_token":
                self.refreshes += 1

    # --- lifetime ----------------------------------------------------------------------

    def start(self) -> "OAuth2TestServer":
        self._http = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.port = int(self._http.server_port)
        self._thread = threading.Thread(target=self._http.serve_forever, name="oauth2-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> "OAuth2TestServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
