"""A message's raw source → the JSON of GET /messages/{id}/body.

Parsed with the stdlib `email` package (policy=default).  Text and HTML are returned as
sent (decoded to str from their transfer encoding and charset; HTML is not sanitized:
the client does that).  Broken parts degrade to what can be read, never to an error.
"""

from __future__ import annotations

from email import policy
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from typing import Any

HEADERS = ("Subject", "From", "To", "Cc", "Reply-To", "Date", "Message-ID", "In-Reply-To", "References",
           "List-Id")


def parse_body(raw: bytes) -> dict[str, Any]:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    text_part = _choose(msg, "plain")
    html_part = _choose(msg, "html")
    attachments = []
    for part in msg.walk():
        if part.is_multipart() or part is text_part or part is html_part:
            continue
        if not _is_attachment(part) and part.get_content_maintype() == "text":
            continue
        attachments.append(_attachment(part))
    return {
        "headers": _headers(msg),
        "text": _content(text_part),
        "html": _content(html_part),
        "attachments": attachments,
        "size": len(raw),
    }


def _is_attachment(part: Message) -> bool:
    try:
        disposition = (part.get_content_disposition() or "").lower()
        return disposition == "attachment" or bool(part.get_filename())
    except Exception:  # noqa: BLE001 - a malformed header is not an attachment
        return False


def _choose(msg: EmailMessage, subtype: str) -> MIMEPart | None:
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:  # noqa: BLE001 - malformed structure
        part = None
    if part is not None and _is_attachment(part):
        return None
    return part


def _content(part: MIMEPart | None) -> str | None:
    if part is None:
        return None
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except Exception:  # noqa: BLE001 - unknown charset, bad encoding: fall back below
        pass
    decoded = part.get_payload(decode=True)  # bytes, or None for a multipart
    payload = decoded if isinstance(decoded, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _attachment(part: Message) -> dict[str, Any]:
    try:
        filename = part.get_filename()
    except Exception:  # noqa: BLE001
        filename = None
    try:
        payload = part.get_payload(decode=True)
    except Exception:  # noqa: BLE001
        payload = None
    if payload is None:
        raw = part.get_payload()
        payload = raw.encode("utf-8", "replace") if isinstance(raw, str) else b""
    content_id = _header(part, "Content-ID")
    if content_id:
        content_id = content_id.strip().removeprefix("<").removesuffix(">")
    return {
        "filename": _clean(filename),
        "content_type": part.get_content_type(),
        "size": len(payload),
        "content_id": _clean(content_id) or None,
        "disposition": _clean(part.get_content_disposition()),
    }


def _header(msg: Message, name: str) -> str | None:
    try:
        value = msg.get(name)
        return None if value is None else _clean(str(value))
    except Exception:  # noqa: BLE001 - undecodable header: give the raw text
        for key, raw in msg.raw_items() if hasattr(msg, "raw_items") else ():
            if key.lower() == name.lower():
                return _clean(str(raw))
        return None


def _headers(msg: Message) -> dict[str, str | None]:
    return {name.lower(): _header(msg, name) for name in HEADERS}


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")
