"""Tokenizer for IMAP response data, in the spirit of imapclient's response_lexer.

Input is what the transport (aioimaplib, see `mailbridge.aio`) hands over for one
command: a list whose `bytes` elements are response lines (untagged ones without their
``"* "``) and whose `bytearray` elements are literal payloads.  A line ending in ``{N}``
is followed by exactly one `bytearray` with the N bytes, then by the rest of that
response as the next `bytes` line (which starts with a space or ``)``; when the literal
ends the response, no line follows).  The tagged completion's text is not among them
(`ImapResponse.text`); callers append it for parsers that read its response codes.

`split_responses` groups that list into responses; `parse_tokens` turns one response
into nested Python values: atoms, numbers and quoted strings are `bytes` (quoted ones
unescaped), ``NIL`` is None, literals are `bytes`, parenthesised lists are `list`.
Brackets belong to their atom, so ``BODY[HEADER.FIELDS (SUBJECT)]`` and
``[Gmail]/Sent`` are single atoms.  Nothing here does I/O.
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Sequence, Union

from mailbridge.errors import ImapProtocolError

Part = Union[bytes, bytearray, memoryview]
Token = Union[bytes, None, list]

# One token: a parenthesis, a quoted string (or a lone '"' when unterminated), or an
# atom: a run of anything else, where "[...]" is swallowed whole.
_TOKEN = re.compile(
    rb'(?:[^\s()"\[]|\[[^\]]*\]|\[)[^\s()"\[]*(?:(?:\[[^\]]*\]|\[)[^\s()"\[]*)*'  # atom
    rb'|[()]'
    rb'|"[^"\\]*(?:\\.[^"\\]*)*"'  # quoted string
    rb'|"',  # unterminated quote
    re.S,
)
_tokens = _TOKEN.findall
_LITERAL_END = re.compile(rb"\{(\d+)\+?\}$")
_UNESCAPE = re.compile(rb"\\(.)", re.S)

_OPEN, _CLOSE, _QUOTE = 40, 41, 34


Lines = Iterable[Part]  # a command's lines, as the transport hands them over


def token_text(data: bytes) -> str:
    """A token's bytes as text: UTF-8, else latin-1 (never fails)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def token_number(value: Token, what: str) -> int:
    """A number token; ImapProtocolError (naming `what`) when it is not one."""
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ImapProtocolError(f"{what} is not a number: {value!r}"[:120]) from None


def split_responses(lines: Iterable[Part]) -> Iterator[list[Part]]:
    """The responses in a command's lines, each as [line, literal, line, literal, ...].

    A leading ``"* "`` is removed if still there; empty lines are skipped.  A literal
    no ``{N}`` announced comes out as a response of its own (parsing it fails).
    """
    current: list[Part] | None = None
    wants_literal = after_literal = False
    for line in lines:
        if type(line) is not bytes:
            if wants_literal:
                current.append(line)  # type: ignore[union-attr]
            else:
                if current is not None:
                    yield current
                current = [line]
            wants_literal, after_literal = False, True
            continue
        if after_literal and (not line or line[0] == 32 or line[0] == _CLOSE):
            current.append(line)  # type: ignore[union-attr]
        elif line:
            if current is not None:
                yield current
            if line[:2] == b"* ":
                line = line[2:]
            current = [line]
        else:
            continue
        after_literal = False
        wants_literal = line[-1:] == b"}" and _LITERAL_END.search(line) is not None
    if current is not None:
        yield current


def parse_tokens(parts: Sequence[Part]) -> list[Token]:
    """One response's tokens, nested by parentheses.  Raises `ImapProtocolError` when
    parentheses do not balance, a quoted string is unterminated, or literals and
    ``{N}`` markers do not pair up."""
    root: list[Token] = []
    cur = root
    stack: list[list[Token]] = []
    expect_literal = False
    for part in parts:
        if type(part) is not bytes:
            if not expect_literal:
                raise ImapProtocolError("literal data without a {n} marker")
            cur.append(bytes(part))
            expect_literal = False
            continue
        if expect_literal:
            raise ImapProtocolError("a {n} marker without its literal data")
        if part[-1:] == b"}":
            m = _LITERAL_END.search(part)
            if m is not None:
                part = part[: m.start()]
                expect_literal = True
        for tok in _tokens(part):
            c = tok[0]
            if c == _OPEN:
                new: list[Token] = []
                cur.append(new)
                stack.append(cur)
                cur = new
            elif c == _CLOSE:
                if not stack:
                    raise ImapProtocolError("unbalanced ')' in response")
                cur = stack.pop()
            elif c == _QUOTE:
                if len(tok) == 1:
                    raise ImapProtocolError("unterminated quoted string in response")
                tok = tok[1:-1]
                if 92 in tok:  # backslash
                    tok = _UNESCAPE.sub(rb"\1", tok)
                cur.append(tok)
            elif tok == b"NIL":
                cur.append(None)
            else:
                cur.append(tok)
    if expect_literal:
        raise ImapProtocolError("response ends where literal data was announced")
    if stack:
        raise ImapProtocolError("unbalanced '(' in response")
    return root


__all__ = ["Part", "Token", "parse_tokens", "split_responses"]
