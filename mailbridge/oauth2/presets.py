"""Well-known OAuth2 providers' endpoints and IMAP scopes (`oauth2 add --preset`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Preset:
    token_url: str
    authorize_url: str
    scopes: str


PRESETS: dict[str, Preset] = {
    "google": Preset("https://oauth2.googleapis.com/token",
                     "https://accounts.google.com/o/oauth2/v2/auth",
                     "https://mail.google.com/"),
    "microsoft": Preset("https://login.microsoftonline.com/common/oauth2/v2.0/token",
                        "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                        "https://outlook.office.com/IMAP.AccessAsUser.All offline_access"),
}


def authorize_params(authorize_url: str) -> dict[str, str]:
    """A provider's own parameters of the authorization request.  Google gives a refresh
    token only with ``access_type=offline``, and again on a second sign-in only with
    ``prompt=consent`` (https://developers.google.com/identity/protocols/oauth2/native-app#step-2:-send-a-request-to-googles-oauth-2.0-server)."""
    if authorize_url.startswith("https://accounts.google.com/"):
        return {"access_type": "offline", "prompt": "consent"}
    return {}
