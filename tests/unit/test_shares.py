"""The split of accounts over live serve processes (pure)."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.shares import assign, share_of


def test_a_thousand_accounts_over_three_then_four_processes():
    three = assign(range(1, 1001), {1: "a", 2: "b", 3: "c"})
    assert all(300 <= n <= 350 for n in Counter(three.values()).values())
    four = assign(range(1, 1001), {1: "a", 2: "b", 3: "c", 4: "d"})
    loads = Counter(four.values())
    assert all(235 <= n <= 255 for n in loads.values()), loads  # within 2 % above, 3 × 2 % below
    moved = sum(1 for a in three if three[a] != four[a])
    assert moved <= loads["d"] * 1.2  # little more than the newcomer's own share moves


def test_a_leaver_moves_only_its_own_accounts():
    before = assign(range(1, 501), {1: 1, 2: 2, 3: 3})
    after = assign(range(1, 501), {1: 1, 3: 3})
    moved = {a for a in before if before[a] != after[a]}
    leavers = {a for a, m in before.items() if m == 2}
    assert leavers <= moved and len(moved - leavers) <= 500 * 0.02  # a load bound may shift a few


def test_no_members_no_accounts():
    assert assign([1, 2], {}) == {}
    assert assign([], {1: 1}) == {}


@settings(max_examples=60, deadline=None)
@given(accounts=st.sets(st.integers(1, 10_000), max_size=300), members=st.sets(st.integers(1, 50), min_size=1,
                                                                                max_size=6))
def test_every_account_has_exactly_one_member_whatever_the_order(accounts, members):
    placed = assign(accounts, {m: m for m in members})
    again = assign(sorted(accounts, reverse=True), {m: m for m in sorted(members, reverse=True)})
    assert placed == again and set(placed) == accounts
    shares = [share_of(m, sorted(accounts), members) for m in members]
    assert sum(len(s) for s in shares) == len(accounts)
    assert set().union(*shares) == accounts
