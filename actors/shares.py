"""Which live serve process should own which account: pure, the same answer in every
process that sees the same members and accounts, with no coordinator.

Rendezvous (highest random weight) hashing with bounded loads: each account ranks the
members by `weight(member, account)`; accounts are placed in a fixed order (by their own
hash) on their highest-ranked member that is not full, where full is
`ceil(len(accounts) / len(members) * (1 + SLACK))`.  So

- every member gets within SLACK (2 %) of an equal share at most, and so no fewer than
  an equal share less (members − 1) × SLACK (plain rendezvous hashing would leave
  333 ± 15 for 1,000 accounts over three processes: one in twenty splits beyond ± 35);
- a member joining or leaving moves little more than its own share: an account keeps its
  member unless that member left, or the newcomer outranks it, or a load bound shifted;
- the answer depends only on the members' ids and the account ids, never on time or on
  the order they were read in.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, Mapping, Sequence, TypeVar

SLACK = 0.02
M = TypeVar("M")


def weight(member_id: int, account_id: int) -> int:
    """The member's rank for the account: a 64-bit hash of both ids."""
    digest = hashlib.blake2b(f"{member_id}/{account_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _order(account_id: int) -> int:
    return int.from_bytes(hashlib.blake2b(str(account_id).encode(), digest_size=8).digest(), "big")


def assign(account_ids: Iterable[int], members: Mapping[int, M], *, slack: float = SLACK) -> dict[int, M]:
    """account id → the member (a value of `members`, keyed by member id) that should own it.
    Empty when there are no members."""
    ids = sorted(set(account_ids), key=lambda a: (_order(a), a))
    if not members or not ids:
        return {}
    keys = sorted(members)
    cap = max(1, math.ceil(len(ids) / len(keys) * (1 + slack)))
    load = dict.fromkeys(keys, 0)
    out: dict[int, M] = {}
    for account_id in ids:
        for member_id in sorted(keys, key=lambda m: weight(m, account_id), reverse=True):
            if load[member_id] < cap:
                load[member_id] += 1
                out[account_id] = members[member_id]
                break
    return out


def share_of(member_id: int, account_ids: Sequence[int], member_ids: Iterable[int]) -> set[int]:
    """The accounts `member_id` should own among `account_ids`, the live members being
    `member_ids` (it is counted among them whether or not listed)."""
    everyone = set(member_ids) | {member_id}
    placed = assign(account_ids, {m: m for m in everyone})
    return {a for a, m in placed.items() if m == member_id}


__all__ = ["SLACK", "assign", "share_of", "weight"]
