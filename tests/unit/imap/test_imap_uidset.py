"""UID sets: compression, parsing, batching."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbridge.errors import ImapProtocolError
from mailbridge.imap.uidset import (
    chunk_uids,
    compress_uids,
    parse_uid_set,
    split_for_command,
    uid_ranges_newest_first,
)

uid_lists = st.lists(st.integers(1, 2**32 - 1) | st.integers(1, 300), max_size=200)


def test_compress():
    assert compress_uids([]) == ""
    assert compress_uids([7]) == "7"
    assert compress_uids([9, 1, 2, 3, 4, 5, 7, 10, 11, 12, 3, 5]) == "1:5,7,9:12"
    assert compress_uids(iter([2, 1])) == "1:2"


def test_parse():
    assert parse_uid_set("1:5,7,9:12") == [1, 2, 3, 4, 5, 7, 9, 10, 11, 12]
    assert parse_uid_set("41,43:116")[:3] == [41, 43, 44]
    assert parse_uid_set("5:3") == [3, 4, 5]
    assert parse_uid_set("3:5,4:8,1") == [1, 3, 4, 5, 6, 7, 8]
    assert parse_uid_set("") == []
    assert parse_uid_set(" 7 ") == [7]
    assert parse_uid_set("10:*", star=12) == [10, 11, 12]
    assert parse_uid_set("*", star=4) == [4]
    assert parse_uid_set("*:10", star=8) == [8, 9, 10]


@pytest.mark.parametrize("bad", ["1:", ":4", "a", "1,,2", "1:2:3", "0", "-1", "1 2", "١"])
def test_parse_rejects(bad):
    with pytest.raises(ImapProtocolError):
        parse_uid_set(bad)


def test_parse_star_needs_a_value():
    with pytest.raises(ImapProtocolError):
        parse_uid_set("1:*")


def test_parse_refuses_huge_sets():
    with pytest.raises(ImapProtocolError):
        parse_uid_set("1:4294967295")
    assert len(parse_uid_set("1:100", limit=100)) == 100
    with pytest.raises(ImapProtocolError):
        parse_uid_set("1:100,200", limit=100)


@settings(max_examples=300)
@given(uid_lists)
def test_round_trip(uids):
    assert parse_uid_set(compress_uids(uids)) == sorted(set(uids))


def test_chunk_uids():
    assert list(chunk_uids([5, 1, 2, 3, 4], 2)) == [[5, 1], [2, 3], [4]]
    assert list(chunk_uids([], 3)) == []
    with pytest.raises(ValueError):
        list(chunk_uids([1], 0))


def test_uid_ranges_newest_first():
    assert list(uid_ranges_newest_first(1, 10, 4)) == [(7, 10), (3, 6), (1, 2)]
    assert list(uid_ranges_newest_first(5, 5, 100)) == [(5, 5)]
    assert list(uid_ranges_newest_first(6, 5, 100)) == []
    with pytest.raises(ValueError):
        list(uid_ranges_newest_first(1, 5, 0))


@settings(max_examples=200)
@given(st.integers(1, 1000), st.integers(0, 1000), st.integers(1, 50))
def test_uid_ranges_cover_exactly(lowest, span, batch):
    highest = lowest + span
    ranges = list(uid_ranges_newest_first(lowest, highest, batch))
    covered = [u for lo, hi in ranges for u in range(hi, lo - 1, -1)]
    assert covered == list(range(highest, lowest - 1, -1))
    assert all(hi - lo + 1 <= batch for lo, hi in ranges)


@settings(max_examples=200)
@given(uid_lists, st.integers(23, 120))
def test_split_for_command(uids, max_len):
    parts = list(split_for_command(uids, max_len))
    assert all(0 < len(p) <= max_len for p in parts)
    assert [u for p in parts for u in parse_uid_set(p)] == sorted(set(uids))


def test_split_for_command_default_and_limits():
    uids = list(range(1, 200_000, 2))  # no runs: the worst case
    parts = list(split_for_command(uids))
    assert all(len(p) <= 8000 for p in parts) and len(parts) > 1
    assert list(split_for_command([])) == []
    with pytest.raises(ValueError):
        list(split_for_command([1], 10))
