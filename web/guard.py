"""What the API refuses before any route runs: pure checks of a request's headers.

Without `MAILBRIDGE_API_TOKEN` the API listens on loopback only and anyone who can reach
it is trusted, so what reaches it must come from this machine and not from a web page:

- `Host` must name loopback (`127.0.0.1`, any other 127/8 or `::1` literal, `localhost`)
  with the serving port: a page served from a name the attacker controls that resolves
  to 127.0.0.1 (DNS rebinding) sends its own name and is refused (421).
- A browser request from another origin is refused (403): an `Origin` other than the
  server's own (the literal `null` included), or `Sec-Fetch-Site` `cross-site` or
  `same-site` (other ports of loopback are the same site).  Top-level navigation to the
  dashboard stays allowed (a link from elsewhere opens it; it can be neither framed nor
  read by the linking page).

In every mode a request that carries state to the server (POST, PUT, PATCH, and a DELETE
with a body) must say `Content-Type: application/json` (415 otherwise): a cross-site
`fetch` can send text/plain without a CORS preflight, never application/json.

Each check returns None (allowed) or the `Refusal` to answer with.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
JSON_TYPES = frozenset({"application/json"})


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to a refused request: status, error code and a message saying what to do."""

    status: int
    code: str
    message: str


def split_host(value: str) -> tuple[str, int | None] | None:
    """`host[:port]` of a Host header (IPv6 in brackets) as (lowercased host, port or
    None); None when it is not of that shape."""
    text = value.strip().lower()
    if not text or any(c.isspace() or c in "/\\@?#" for c in text):
        return None
    try:
        parts = urlsplit("//" + text)
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if not host:
        return None
    return host, port


def is_loopback_name(host: str) -> bool:
    """`localhost` or an IP literal of the loopback networks."""
    name = host.rstrip(".")
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def check_host(host_header: str | None, server_port: int | None) -> Refusal | None:
    """No-token mode: the Host a loopback client sends, naming loopback and our port.
    A request without Host (HTTP/1.0 clients) is allowed: browsers always send one."""
    if host_header is None:
        return None
    parsed = split_host(host_header)
    if parsed is not None and is_loopback_name(parsed[0]):
        port = parsed[1] if parsed[1] is not None else 80
        if server_port is None or port == server_port:
            return None
    return Refusal(421, "host_not_allowed",
                   "this server answers only requests addressed to 127.0.0.1, localhost or [::1] with its port "
                   "(without MAILBRIDGE_API_TOKEN it trusts local clients only); use http://127.0.0.1:PORT, "
                   "or set MAILBRIDGE_API_TOKEN to serve other names")


def _same_origin(origin: str, host_header: str | None) -> bool:
    if host_header is None:
        return False
    try:
        parts = urlsplit(origin.strip().lower())
    except ValueError:
        return False
    if parts.scheme != "http" or parts.path or parts.query or parts.fragment or parts.username is not None:
        return False
    return parts.netloc == host_header.strip().lower()


def check_cross_site(method: str, path: str, host_header: str | None, origin: str | None,
                     fetch_site: str | None, fetch_mode: str | None, fetch_dest: str | None) -> Refusal | None:
    """No-token mode: refuse a browser request made by a page of another origin."""
    site = (fetch_site or "").strip().lower()
    navigating = (method == "GET" and path == "/" and (fetch_mode or "").strip().lower() == "navigate"
                  and (fetch_dest or "").strip().lower() == "document")
    if origin is not None and not _same_origin(origin, host_header) and not navigating:
        return Refusal(403, "cross_origin", "requests from other web pages are refused: without "
                       "MAILBRIDGE_API_TOKEN this API trusts local clients only (send no Origin header, or "
                       "set MAILBRIDGE_API_TOKEN and send it as a bearer token)")
    if site in ("cross-site", "same-site") and not navigating:
        return Refusal(403, "cross_site", f"a {site} request is refused: without MAILBRIDGE_API_TOKEN this "
                       "API trusts local clients only (open the dashboard at its own address, or set "
                       "MAILBRIDGE_API_TOKEN)")
    return None


def check_content_type(method: str, content_type: str | None, content_length: int | None,
                       chunked: bool) -> Refusal | None:
    """Every mode: a write's body must be declared JSON."""
    carries_body = chunked or (content_length or 0) > 0
    if method not in WRITE_METHODS and not (method == "DELETE" and carries_body):
        return None
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind in JSON_TYPES:
        return None
    shown = kind or "none"
    return Refusal(415, "unsupported_media_type",
                   f"a {method} body must be JSON sent with Content-Type: application/json (got {shown})")


__all__ = ["Refusal", "check_content_type", "check_cross_site", "check_host", "is_loopback_name",
           "split_host"]
