"""`mailbridge accounts authorize`: the OAuth2 authorization-code flow with PKCE
(RFC 7636, S256) and a loopback redirect (RFC 8252 §7.3).

A one-shot HTTP listener on 127.0.0.1 (a free port, or the one asked) waits for the
browser's redirect; the code it carries is exchanged, with the PKCE verifier, at the
client's token endpoint.  Pure parts (`pkce_pair`, `authorization_url`, `read_redirect`)
are apart from the listener (`wait_for_redirect`, trio) and the whole flow
(`authorize`).  The verifier, the code and the tokens never appear in a message or a log.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
from typing import Callable
from urllib.parse import parse_qs

import httpx
import trio

from mailbridge.accountops import OAuth2Grant, client_secret
from mailbridge.config import Settings
from mailbridge.errors import InvalidInput, OAuth2Error
from mailbridge.oauth2.presets import authorize_params
from mailbridge.oauth2.tokens import token_request
from mailbridge.store import oauth2 as oauth2_store
from mailbridge.store.db import Db

DEFAULT_TIMEOUT = 300.0
MAX_REQUEST = 16 * 1024  # bytes of a redirect request's head
REQUEST_TIMEOUT = 30.0  # seconds one browser connection may take to send its request


def code_challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def pkce_pair() -> tuple[str, str]:
    """A new (code_verifier, S256 code_challenge) pair (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(48)  # 64 characters of [A-Za-z0-9_-]
    return verifier, code_challenge(verifier)


def authorization_url(authorize_url: str, client_id: str, redirect_uri: str, *, scopes: str, state: str,
                      challenge: str, login_hint: str = "") -> str:
    """The address the user opens: the client's authorize endpoint with the request's
    parameters (and the provider's own, see `presets.authorize_params`)."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": state,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    if scopes:
        params["scope"] = scopes
    if login_hint:
        params["login_hint"] = login_hint
    params.update(authorize_params(authorize_url))
    return str(httpx.URL(authorize_url).copy_merge_params(params))


def read_redirect(query: str, state: str) -> str | None:
    """The authorization code in a redirect's query string (RFC 6749 §4.1.2), None when
    the request is no redirect at all (no code, state or error: keep waiting).  OAuth2Error
    for a refusal (``error=``) or a state other than this sign-in's."""
    values = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items() if v}
    if not {"code", "state", "error"} & values.keys():
        return None
    if "error" in values:
        said = values["error"][:100]
        if values.get("error_description"):
            said += f" ({values['error_description'][:200]})"
        raise OAuth2Error(f"the authorization server refused the sign-in: {said}", values["error"][:100])
    if not secrets.compare_digest(values.get("state", "").encode(), state.encode()):
        raise OAuth2Error("the redirect's state does not match this sign-in (a stale browser tab or a "
                          "forged request): nothing was stored; run `accounts authorize` again")
    code = values.get("code", "")
    if not code:
        raise OAuth2Error("the redirect carries no authorization code; run `accounts authorize` again")
    return code


def _page(status: int, title: str, text: str) -> bytes:
    body = (f"<!doctype html><meta charset=utf-8><title>mailbridge: {html.escape(title)}</title>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(text)}</p>").encode("utf-8")
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n")
    return head.encode("ascii") + body


async def _request_target(stream: trio.abc.Stream) -> tuple[str, str] | None:
    """(method, target) of the request on `stream`, None when it is not HTTP."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            return None
    parts = data.split(b"\n", 1)[0].decode("latin-1").strip().split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    return parts[0], parts[1]


async def wait_for_redirect(listener: trio.SocketListener, state: str, *, timeout: float) -> str:
    """The code of the first redirect that reaches `listener` within `timeout` seconds.
    Connections are served side by side (a browser's idle pre-connection does not delay
    the real one); requests that are no redirect get a 404 and waiting goes on.
    OAuth2Error for a refusal, a wrong state, or no redirect in time."""
    outcome: list[str | OAuth2Error] = []

    async def serve(stream: trio.SocketStream, nursery: trio.Nursery) -> None:
        decided = False
        try:
            async with stream:
                with trio.move_on_after(REQUEST_TIMEOUT):
                    request = await _request_target(stream)
                    if request is None:
                        return
                    method, target = request
                    path, _, query = target.partition("?")
                    if method != "GET" or path != "/":
                        await stream.send_all(_page(404 if method == "GET" else 405, "not here",
                                                    "mailbridge waits for the sign-in's redirect at /"))
                        return
                    try:
                        code = read_redirect(query, state)
                    except OAuth2Error as exc:
                        outcome.append(exc)
                        decided = True
                        await stream.send_all(_page(400, "sign-in failed", str(exc)))
                        return
                    if code is None:
                        await stream.send_all(_page(404, "waiting", "mailbridge waits for the sign-in's redirect"))
                        return
                    outcome.append(code)
                    decided = True
                    await stream.send_all(_page(200, "signed in", "mailbridge got the authorization; you can "
                                                                 "close this tab and return to the terminal"))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the browser went away mid-answer: what it sent still counts
        finally:
            if decided:
                nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.cancel_scope.deadline = trio.current_time() + timeout

        async def accept() -> None:
            while True:
                try:
                    stream = await listener.accept()
                except OSError:  # out of file descriptors, say: wait a little, keep listening
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(serve, stream, nursery)

        nursery.start_soon(accept)
    if not outcome:
        raise OAuth2Error(f"no sign-in within {timeout:g} s (the browser did not come back to the loopback "
                          "redirect); nothing was stored; run `accounts authorize` again (or raise --timeout)")
    first = outcome[0]
    if isinstance(first, OAuth2Error):
        raise first
    return first


async def open_listener(port: int) -> trio.SocketListener:
    """A listener on 127.0.0.1:`port` (0: a free one); InvalidInput when that cannot be."""
    try:
        listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    except OSError as exc:
        raise InvalidInput(f"cannot listen on 127.0.0.1:{port} for the redirect ({exc.strerror or exc}); "
                           "choose another --redirect-port", {"redirect_port": "cannot listen there"}) from None
    return listeners[0]


async def authorize(db: Db, settings: Settings, client_name: str, *, login_hint: str = "", port: int = 0,
                    redirect_host: str = "127.0.0.1", timeout: float = DEFAULT_TIMEOUT,
                    show: Callable[[str, str], None]) -> OAuth2Grant:
    """Run the flow with the named client: `show(url, redirect_uri)` tells the user what
    to open; returns the grant (with its refresh token) once the code is exchanged.  The
    listener is on 127.0.0.1 whatever `redirect_host` (``localhost`` for a registration
    that names it, as Microsoft's portal does) the redirect URI names.
    InvalidInput for an unknown client or one without an authorize URL; OAuth2Error for
    a refusal, a wrong state, a timeout, or a token endpoint that gives no refresh token."""
    client = await oauth2_store.get_client(db, client_name)
    if not client.authorize_url:
        raise InvalidInput(f"the OAuth2 client {client.name!r} has no authorize URL: register it with "
                           "`oauth2 add --authorize-url URL` (or a --preset)", {"oauth2": "no authorize URL"})
    secret = await client_secret(db, settings, client)
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(24)
    listener = await open_listener(port)
    async with listener:
        redirect_uri = f"http://{redirect_host}:{listener.socket.getsockname()[1]}/"
        show(authorization_url(client.authorize_url, client.client_id, redirect_uri, scopes=client.scopes,
                               state=state, challenge=challenge, login_hint=login_hint), redirect_uri)
        code = await wait_for_redirect(listener, state, timeout=timeout)
    grant = await token_request(client.token_url, {"grant_type": "authorization_code", "code": code,
                                                   "redirect_uri": redirect_uri, "code_verifier": verifier},
                                client.client_id, secret, timeout=settings.connect_timeout,
                                secrets=(code, verifier), grant="authorization code")
    if grant.refresh_token is None:
        raise OAuth2Error(f"the token endpoint of {client.name!r} gave no refresh token, so mailbridge could "
                          "not sign in later (Microsoft: add the offline_access scope to the client)")
    return OAuth2Grant(client, grant.access_token, grant.expires_at, grant.refresh_token)
