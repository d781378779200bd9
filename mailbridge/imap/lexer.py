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

Whatever the server sent, these end in a value or `ImapProtocolError`, in time linear in
the input: no scan restarts where an earlier one already looked (a run of ``[`` or of
``"\\`` costs one pass, not one per character), nesting is capped at `MAX_DEPTH`, and a
number is only read from ASCII digits up to `MAX_NUMBER` (what Postgres' ``bigint`` holds).
"""

from __future__ import annotations

import re
from typing import Iterable, Iterator, Sequence, Union

from mailbridge.errors import ImapProtocolError

Part = Union[bytes, bytearray, memoryview]
Token = Union[bytes, None, list]

MAX_NUMBER = 2**63 - 1  # the largest number a response may carry: Postgres' bigint
MAX_DEPTH = 64  # parentheses nested deeper than this are refused (real responses use a few)

# One token: a parenthesis, a quoted string (or, unterminated, '"' and the rest of the
# part), or an atom: a run of anything else, where "[...]" is swallowed whole.  A "[" only
# pairs with a "]" before the next "[", so that no "[" rescans what an earlier one scanned.
_TOKEN = re.compile(
    rb'(?:[^\s()"\[]|\[[^\[\]]*\]|\[)[^\s()"\[]*(?:(?:\[[^\[\]]*\]|\[)[^\s()"\[]*)*'  # atom
    rb'|[()]'
    rb'|"[^"\\]*(?:\\.[^"\\]*)*"'  # quoted string
    rb'|"[\s\S]*',  # unterminated quote: the rest of the part
    re.S,
)
_tokens = _TOKEN.findall
_LITERAL_END = re.compile(rb"\{(\d+)\+?\}$")
_UNESCAPE = re.compile(rb"\\(.)", re.S)  # what a backslash escapes

_OPEN, _CLOSE, _QUOTE, _BACKSLASH = 40, 41, 34, 92


def _escaped_end(tok: bytes) -> bool:
    """Whether the '"' that ends `tok` is escaped (an odd run of backslashes before it):
    then `tok` is an unterminated string that ran to the end of its part."""
    return (len(tok) - 1 - len(tok[:-1].rstrip(b"\\"))) % 2 == 1


Lines = Iterable[Part]  # a command's lines, as the transport hands them over


def token_text(data: bytes) -> str:
    """A token's bytes as text: UTF-8, else latin-1 (never fails)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def brief(value: Token | bytearray) -> str:
    """A token as an error message shows it: bytes cut to 40, a list only by its length."""
    if isinstance(value, (bytes, bytearray)):
        text = repr(bytes(value[:40]))
        return text + "..." if len(value) > 40 else text
    if value is None:
        return "NIL"
    return f"a list of {len(value)} items"


def token_number(value: Token | bytearray, what: str) -> int:
    """A number token: ASCII digits, at most `MAX_NUMBER`; ImapProtocolError (naming
    `what`) when it is anything else (a sign, a list, NIL, too many digits)."""
    if type(value) is bytes and value.isdigit():
        if len(value) < 19:  # below 10**18: always in range
            return int(value)
        digits = value.lstrip(b"0") or b"0"
        if len(digits) <= 19 and (number := int(digits)) <= MAX_NUMBER:
            return number
        raise ImapProtocolError(f"{what} is out of range: {brief(value)}")
    raise ImapProtocolError(f"{what} is not a number: {brief(value)}")


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
                if len(stack) >= MAX_DEPTH:
                    raise ImapProtocolError(f"parentheses nested deeper than {MAX_DEPTH} in response")
                new: list[Token] = []
                cur.append(new)
                stack.append(cur)
                cur = new
            elif c == _CLOSE:
                if not stack:
                    raise ImapProtocolError("unbalanced ')' in response")
                cur = stack.pop()
            elif c == _QUOTE:
                if len(tok) == 1 or tok[-1] != _QUOTE or (tok[-2] == _BACKSLASH and _escaped_end(tok)):
                    raise ImapProtocolError("unterminated quoted string in response")
                tok = tok[1:-1]
                if _BACKSLASH in tok:
                    tok = b"".join(_UNESCAPE.split(tok))  # split keeps each escaped byte
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


__all__ = ["MAX_DEPTH", "MAX_NUMBER", "Part", "Token", "brief", "parse_tokens", "split_responses", "token_number",
           "token_text"]
