"""The search document of a message built here, for the inputs where it is sure to be
exactly what Postgres builds (``mailbridge_message_search``, sql/0015), so that an
initial sync's Postgres need not run its text parser on every row.

`document_literal` returns a ``tsvector`` literal, or None when the message is outside
what this module reproduces; the batch write then has Postgres build that row's document
(`mailbridge.store.messages`), so a document is the same whichever side built it.

What is reproduced: ``to_tsvector('simple', …)`` of the function's text (subject, sender
name, then the addresses whole, split at ``@``, and split into words), when

- the subject and the name are ASCII letters and digits separated by the punctuation in
  `_SEPARATORS`, where ``.`` and ``-`` are only followed by such punctuation or the end
  (so never a host, a file, a number or a hyphenated word), and no run of letters and
  digits starts with digits and ``e`` and a digit (a number in scientific notation);
- every address is lowercase ``local@domain``: the local part one label of letters and
  digits or several of two letters or more, dot-separated (``j.doe`` and ``john.doe2``
  the parser splits); the domain dot-separated labels of letters, digits and inner
  hyphens and a last one of two letters or more, every label starting with a letter;
- no token is longer than `MAX_TOKEN` characters, there are at most `MAX_TOKENS` tokens,
  no lexeme occurs more than `MAX_REPEATS` times and the text is at most `MAX_TEXT`
  characters (below Postgres' limits on positions, and the function's 200,000-character
  cut).

Then the default parser's tokens are the runs of letters and digits (the addresses' two
first forms: the address, its local part and its domain, each one token), and the
``simple`` dictionary lowercases them.  The integration tests hold this to the server's
own function on generated and adversarial text; the batch write also compares two rows of
every batch with the server's function and, if they differ (a server whose ``simple``
configuration was altered), builds the whole batch's documents there.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from itertools import chain

MAX_TOKEN = 200  # characters in one token
MAX_TOKENS = 2000  # tokens in one document (Postgres keeps positions up to 16,383)
MAX_REPEATS = 200  # positions of one lexeme (Postgres keeps 256)
MAX_TEXT = 100_000  # characters of the function's text (it reads the first 200,000)

# punctuation the default parser reads as a blank between words (checked by the tests)
_SEPARATORS = " \t,:;!?()[]\"'#$%*=|^`{}"
_PLAIN = re.compile("[A-Za-z0-9" + re.escape(_SEPARATORS) + "]*\\Z")  # the common case, quickly
_TEXT = re.compile("(?:[A-Za-z0-9" + re.escape(_SEPARATORS) + "]|[.-](?![A-Za-z0-9.\\-]))*\\Z")
_WORD = re.compile(r"[a-z0-9]+")
_SCIENTIFIC = re.compile(r"(?<![A-Za-z0-9])[0-9]+[eE][0-9]")
_ADDRESS = r"(?:[a-z][a-z0-9]*|[a-z]{2,}(?:\.[a-z]{2,})+)@(?:[a-z][a-z0-9]*(?:-[a-z0-9]+)*\.)+[a-z]{2,}"
_ADDRESSES = re.compile(f"{_ADDRESS}(?: {_ADDRESS})*\\Z")  # space-separated, as the function joins them
# what follows each token in the literal: its position, then the next token's quote
_AT = tuple(f"':{position} '" for position in range(1, MAX_TOKENS + 1))


def document_literal(subject: str | None, from_name: str | None, from_email: str | None,
                     to_emails: Sequence[str], cc_emails: Sequence[str]) -> str | None:
    """The ``tsvector`` literal equal to ``mailbridge_message_search`` of these values, or
    None where this module does not reproduce it (see the module's docstring)."""
    tokens: list[str] = []
    long = False
    size = 0
    for text in (subject, from_name):
        if text:
            size += len(text)
            if not _PLAIN.match(text) and not _TEXT.match(text):
                return None
            if ("e" in text or "E" in text) and _SCIENTIFIC.search(text):
                return None
            long = long or len(text) > MAX_TOKEN
            tokens += _WORD.findall(text.lower())
    addresses = " ".join([a for a in (from_email, *to_emails, *cc_emails) if a])
    if addresses:
        if not _ADDRESSES.match(addresses):
            return None
        long = long or len(addresses) > MAX_TOKEN
        size += 3 * len(addresses)
        # whole, split at '@' (the local part and the domain are one token each), words
        tokens += addresses.split(" ")
        tokens += addresses.replace("@", " ").split(" ")
        tokens += _WORD.findall(addresses)
    count = len(tokens)
    if not count:
        return ""
    if count > MAX_TOKENS or size > MAX_TEXT or (long and max(map(len, tokens)) > MAX_TOKEN):
        return None
    if count > MAX_REPEATS and Counter(tokens).most_common(1)[0][1] > MAX_REPEATS:
        return None
    return "'" + "".join(chain.from_iterable(zip(tokens, _AT)))[:-2]


__all__ = ["MAX_REPEATS", "MAX_TEXT", "MAX_TOKEN", "MAX_TOKENS", "document_literal"]
