"""The derived email_id (mailbridge.sync.identity): stable, shared by copies, NULL
without a Message-ID, and cheap."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from mailbridge.sync.identity import PREFIX, derive_email_id

WHEN = datetime(2024, 5, 17, 9, 30, 12, tzinfo=timezone.utc)


def test_the_same_message_has_the_same_id():
    a = derive_email_id("abc@example.test", WHEN, 1234)
    assert a == derive_email_id("abc@example.test", WHEN.astimezone(timezone(timedelta(hours=2))), 1234)
    assert a is not None and a.startswith(PREFIX) and len(a) == len(PREFIX) + 16
    int(a[len(PREFIX):], 16)


def test_the_known_value_sql_also_computes():
    # md5("abc@example.test\n1715938212\n1234"), first 16 hex digits: what sql/0013 writes
    import hashlib
    expected = "mb-" + hashlib.md5(b"abc@example.test\n1715938212\n1234").hexdigest()[:16]
    assert derive_email_id("abc@example.test", WHEN, 1234) == expected


def test_each_part_matters():
    base = derive_email_id("abc@example.test", WHEN, 1234)
    assert derive_email_id("abd@example.test", WHEN, 1234) != base
    assert derive_email_id("abc@example.test", WHEN + timedelta(seconds=1), 1234) != base
    assert derive_email_id("abc@example.test", WHEN, 1235) != base
    # parts cannot run into each other
    assert derive_email_id("a\n1", WHEN, 1) != derive_email_id("a", WHEN, 11)


def test_whole_seconds_and_dates_before_1970():
    assert derive_email_id("x@y", WHEN + timedelta(microseconds=999_999), 1) == derive_email_id("x@y", WHEN, 1)
    old = datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=timezone.utc)  # floor: -1
    import hashlib
    assert derive_email_id("x@y", old, 1) == "mb-" + hashlib.md5(b"x@y\n-1\n1").hexdigest()[:16]


def test_no_message_id_date_or_size_gives_none():
    assert derive_email_id(None, WHEN, 1) is None
    assert derive_email_id("", WHEN, 1) is None
    assert derive_email_id("x@y", None, 1) is None
    assert derive_email_id("x@y", WHEN, None) is None


def test_nul_is_dropped_as_postgres_stores_it_and_non_ascii_hashes():
    assert derive_email_id("a\x00b@c", WHEN, 1) == derive_email_id("ab@c", WHEN, 1)
    assert derive_email_id("ünï@exämple", WHEN, 1) is not None


def test_cost_is_a_few_microseconds():
    n = 50_000
    ids = [f"m{i}@example.test" for i in range(n)]
    t0 = time.perf_counter()
    for mid in ids:
        derive_email_id(mid, WHEN, 4321)
    per = (time.perf_counter() - t0) / n * 1e6
    print(f"derive_email_id: {per:.2f} µs per message")
    assert per < 10
