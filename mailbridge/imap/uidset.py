"""UID sets: compress, parse, and cut into batches that fit in a command line."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator

from mailbridge.errors import ImapProtocolError

# A parsed set larger than this is refused: a hostile or broken server must not make
# us build a list of four billion ints out of "1:*".
MAX_PARSED_UIDS = 10_000_000


def _ranges(uids: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Sorted, deduplicated UIDs as inclusive (first, last) runs."""
    ordered = sorted(set(uids))
    if not ordered:
        return
    first = last = ordered[0]
    for uid in islice(ordered, 1, None):
        if uid == last + 1:
            last = uid
        else:
            yield first, last
            first = last = uid
    yield first, last


def _run_text(first: int, last: int) -> str:
    return str(first) if first == last else f"{first}:{last}"


def compress_uids(uids: Iterable[int]) -> str:
    """``"1:5,7,9:12"`` for the given UIDs (sorted, deduplicated); ``""`` for none."""
    return ",".join(_run_text(first, last) for first, last in _ranges(uids))


def _number(text: str, star: int | None, whole: str) -> int:
    if text == "*":
        if star is None:
            raise ImapProtocolError(f"UID set {whole!r} uses '*' but no value for it is known")
        return star
    if not text.isdigit() or not text.isascii():
        raise ImapProtocolError(f"malformed UID set {whole!r}")
    value = int(text)
    if value == 0:
        raise ImapProtocolError(f"malformed UID set {whole!r} (0 is not a UID)")
    return value


def parse_uid_set(s: str, *, star: int | None = None, limit: int = MAX_PARSED_UIDS) -> list[int]:
    """The UIDs of an IMAP sequence set (``"1:5,7,9:*"``), ascending and deduplicated.

    ``*`` stands for `star`; ranges may be written high-to-low.  Raises
    `ImapProtocolError` on malformed text, on ``*`` without `star`, and when the set holds
    more than `limit` UIDs.  An empty string is the empty set.
    """
    out: list[int] = []
    for lo, hi in uid_set_spans(s, star=star, limit=limit):
        out.extend(range(lo, hi + 1))
    return out


def uid_set_spans(s: str, *, star: int | None = None, limit: int = MAX_PARSED_UIDS) -> list[tuple[int, int]]:
    """`parse_uid_set` as ascending, disjoint (first, last) spans: a big set costs no
    memory per UID here."""
    s = s.strip()
    if not s:
        return []
    spans: list[tuple[int, int]] = []
    total = 0
    for part in s.split(","):
        lo_text, colon, hi_text = part.partition(":")
        lo = _number(lo_text, star, s)
        hi = _number(hi_text, star, s) if colon else lo
        if lo > hi:
            lo, hi = hi, lo
        total += hi - lo + 1
        if total > limit:
            raise ImapProtocolError(f"UID set {s[:60]!r} holds more than {limit} UIDs")
        spans.append((lo, hi))
    if len(spans) == 1:
        return spans
    spans.sort()
    merged: list[tuple[int, int]] = []
    top = 0
    for lo, hi in spans:
        if hi <= top:
            continue
        merged.append((max(lo, top + 1), hi))
        top = hi
    return merged


def chunk_uids(uids: Iterable[int], max_count: int) -> Iterator[list[int]]:
    """Consecutive lists of at most `max_count` UIDs, in the order given."""
    if max_count < 1:
        raise ValueError("max_count must be at least 1")
    it = iter(uids)
    while chunk := list(islice(it, max_count)):
        yield chunk


def uid_ranges_newest_first(lowest: int, highest: int, batch: int) -> Iterator[tuple[int, int]]:
    """Inclusive (lo, hi) UID ranges of at most `batch` UIDs covering lowest..highest, newest first.

    ``uid_ranges_newest_first(1, 10, 4)`` → (7, 10), (3, 6), (1, 2).  Nothing when
    highest < lowest.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    hi = highest
    while hi >= lowest:
        lo = max(lowest, hi - batch + 1)
        yield lo, hi
        hi = lo - 1


def split_for_command(uids: Iterable[int], max_len: int = 8000) -> Iterator[str]:
    """Compressed UID sets, each at most `max_len` characters, covering all `uids` in order.

    Runs are never split; `max_len` must hold the longest possible run (23 characters).
    """
    if max_len < 23:
        raise ValueError("max_len must be at least 23 (one 'uid:uid' run of 32-bit UIDs)")
    parts: list[str] = []
    size = -1  # no comma before the first run
    for first, last in _ranges(uids):
        text = _run_text(first, last)
        if parts and size + 1 + len(text) > max_len:
            yield ",".join(parts)
            parts, size = [], -1
        parts.append(text)
        size += 1 + len(text)
    if parts:
        yield ",".join(parts)


__all__ = [
    "MAX_PARSED_UIDS",
    "chunk_uids",
    "compress_uids",
    "parse_uid_set",
    "split_for_command",
    "uid_ranges_newest_first",
]
