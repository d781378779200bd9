"""How many write batches one initial-sync FETCH covers (`batches_per_fetch`)."""

from mailbridge.imap.throttle import Throttle, default_burst
from mailbridge.sync.folder import MAX_UIDS_PER_FETCH, batches_per_fetch


def test_one_batch_per_fetch_while_the_budget_holds():
    assert batches_per_fetch(0, 2000, 16) == 1
    assert batches_per_fetch(32_000, 2000, 16) == 1
    assert batches_per_fetch(10**6, 2000, None) == 1


def test_more_batches_per_fetch_keep_within_the_budget():
    assert batches_per_fetch(32_001, 2000, 16) == 2  # 17 batches, 9 FETCHes
    assert batches_per_fetch(50_000, 2000, 16) == 2  # 25 batches, 13 FETCHes
    assert batches_per_fetch(150, 40, 2) == 2


def test_the_cap_bounds_what_one_fetch_holds():
    assert batches_per_fetch(200_000, 2000, 16) == MAX_UIDS_PER_FETCH // 2000 == 5
    assert batches_per_fetch(10**7, 2000, 1) == 5
    assert batches_per_fetch(10**7, 500, 1) == 20
    assert batches_per_fetch(10**7, 20_000, 1) == 1  # a batch bigger than the cap stays one batch


def test_the_default_burst_is_the_throttles():
    for per_minute in (1, 5, 6, 200, 1000):
        assert Throttle(per_minute).burst == default_burst(per_minute)
