"""OAuth2 clients as the command line (`oauth2 add`) and the API (`POST /oauth2/clients`)
both register them: one validation, one way to store the secret (encrypted)."""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import urlsplit

from mailbridge.errors import InvalidInput
from mailbridge.oauth2.presets import PRESETS
from mailbridge.secrets import Cipher
from mailbridge.store import oauth2 as oauth2_store
from mailbridge.store.db import Db
from mailbridge.store.oauth2 import NewOAuth2Client, OAuth2Client

MAX_NAME = 100
MAX_URL = 2000
MAX_TEXT = 500
MAX_SECRET = 4096
_SCOPE = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")  # RFC 6749 §3.3 scope-token


def _printable(text: str, limit: int) -> bool:
    return 0 < len(text) <= limit and text.isprintable()


def _url_problem(value: Any) -> str | None:
    """Why `value` is not an http(s) URL with a host (None: it is one)."""
    text = value if isinstance(value, str) else ""
    parts = urlsplit(text) if _printable(text, MAX_URL) and " " not in text else None
    if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an https:// (or http://) URL"
    return None


def _scopes(value: Any) -> tuple[str | None, str | None]:
    """(the scopes as stored, space-separated; the problem), from a string or a list."""
    if value is None:
        return None, None
    if isinstance(value, str):
        items = value.split()
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        items = [part for v in value for part in v.split()]
    else:
        return None, "must be scope names separated by spaces"
    bad = [s for s in items if not _SCOPE.match(s)]
    if bad:
        return None, f"{bad[0]!r} is not a valid scope (printable ASCII without spaces, quotes or backslashes)"
    text = " ".join(items)
    if len(text) > MAX_URL:
        return None, f"must be at most {MAX_URL} characters"
    return text, None


def validate_client(fields: Mapping[str, Any]) -> NewOAuth2Client:
    """A `NewOAuth2Client` from raw fields (`name`, `token_url`, `client_id`, optional
    `authorize_url`, `scopes` (a space-separated string or a list) and `preset`, whose
    endpoints and scopes fill what is not given), or InvalidInput naming every bad field."""
    problems: dict[str, str] = {}
    preset_name = fields.get("preset")
    preset = None
    if preset_name not in (None, ""):
        preset = PRESETS.get(preset_name) if isinstance(preset_name, str) else None
        if preset is None:
            problems["preset"] = "must be one of " + ", ".join(sorted(PRESETS))
    name = fields.get("name")
    name = name.strip() if isinstance(name, str) else ""
    if not _printable(name, MAX_NAME):
        problems["name"] = f"must be 1 to {MAX_NAME} printable characters"
    token_url = fields.get("token_url") or (preset.token_url if preset else None)
    if token_url is None:
        problems["token_url"] = "is required (or a preset: " + ", ".join(sorted(PRESETS)) + ")"
    elif (why := _url_problem(token_url)) is not None:
        problems["token_url"] = why
    authorize_url = fields.get("authorize_url") or (preset.authorize_url if preset else None)
    if authorize_url is not None and (why := _url_problem(authorize_url)) is not None:
        problems["authorize_url"] = why
    client_id = fields.get("client_id")
    if not isinstance(client_id, str) or not _printable(client_id.strip(), MAX_TEXT):
        problems["client_id"] = f"must be 1 to {MAX_TEXT} printable characters"
    scopes, why = _scopes(fields.get("scopes"))
    if why is not None:
        problems["scopes"] = why
    if problems:
        raise InvalidInput("invalid OAuth2 client: " + "; ".join(f"{k}: {v}" for k, v in problems.items()),
                           problems)
    assert isinstance(client_id, str)
    return NewOAuth2Client(name=name, token_url=str(token_url), client_id=client_id.strip(),
                           authorize_url=str(authorize_url) if authorize_url else None,
                           scopes=scopes if scopes is not None else (preset.scopes if preset else ""))


def check_secret(secret: Any) -> str:
    """The client secret ("" for none), or InvalidInput."""
    if secret is None:
        return ""
    if not isinstance(secret, str) or len(secret) > MAX_SECRET or not secret.isprintable():
        raise InvalidInput(f"invalid OAuth2 client: client_secret: must be at most {MAX_SECRET} printable "
                           "characters", {"client_secret": f"must be at most {MAX_SECRET} printable characters"})
    return secret


async def register_client(db: Db, cipher: Cipher, new: NewOAuth2Client, secret: str) -> OAuth2Client:
    """Store the client, its secret (if any) encrypted; NameTaken when the name is taken."""
    await oauth2_store.insert_client(db, new, cipher.encrypt(secret) if secret else None)
    return await oauth2_store.get_client(db, new.name)
