"""The dashboard at `GET /`: one HTML page (web/templates) with its stylesheet and script
(web/static) inlined, so the page is a single authenticated response; it then reads
`/accounts` and `/actors` with fetch() (Bearer header) and follows `/events` over
server-sent events (the token as `access_token`, RFC 6750 §2.3: EventSource cannot send
a header).

Everything the mail brings (subjects, names, folder names) is put into the page by the
script with `textContent`, never as markup; the page's Content-Security-Policy allows
only its own nonce'd script and style, so injected markup could not run anyway.
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from quart import Response

from mailbridge import __version__

TOKEN_PARAM = "access_token"


@lru_cache(maxsize=1)
def _env() -> Environment:
    return Environment(loader=PackageLoader("web", "templates"), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True)


@lru_cache(maxsize=4)
def _static(name: str) -> str:
    return resources.files("web").joinpath("static", name).read_text("utf-8")


def _headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'"),
        "Referrer-Policy": "no-referrer",  # the first URL carries the token
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-store",
    }


def _render(template: str, status: int, **context: Any) -> Response:
    nonce = secrets.token_urlsafe(18)
    html = _env().get_template(template).render(nonce=nonce, version=__version__, **context)
    return Response(html, status=status, headers=_headers(nonce), content_type="text/html; charset=utf-8")


def page(*, last_event_id: int | None, token_required: bool) -> Response:
    """The dashboard.  `last_event_id` lets the page replay the last few events at once."""
    boot = {"last_event_id": last_event_id, "token_required": token_required, "token_param": TOKEN_PARAM}
    return _render("dashboard.html", 200, boot=boot, css=_static("dashboard.css"), js=_static("dashboard.js"))


def unauthorized_page(*, rejected: bool) -> Response:
    """The 401 a browser gets at `/` without (or with a wrong) token: a short page asking
    for the token (or re-sending the one this tab remembers, when none was rejected)."""
    return _render("unauthorized.html", 401, rejected=rejected, css=_static("dashboard.css"),
                   token_param=TOKEN_PARAM)


def wants_html(accept: str) -> bool:
    """A browser navigating (Accept names text/html), not an API client."""
    return "text/html" in accept.lower()


__all__ = ["TOKEN_PARAM", "page", "unauthorized_page", "wants_html"]
