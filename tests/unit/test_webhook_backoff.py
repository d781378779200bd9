"""Webhook retries: exponential with jitter, capped, then parked after the retry window."""

from __future__ import annotations

import random

import pytest

from mailbridge.webhooks.backoff import Backoff


def test_the_delay_doubles_per_failure_within_half_to_full_of_the_step():
    policy = Backoff(retry_hours=24, base=5, cap=3600)
    assert [policy.delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [5, 10, 20, 40]
    assert [policy.delay(n, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [2.5, 5, 10, 20]
    rng = random.Random(1)
    for n in range(1, 12):
        full = min(3600, 5 * 2 ** (n - 1))
        assert full / 2 <= policy.delay(n, rand=rng.random) <= full


def test_the_delay_is_capped_and_huge_attempt_counts_do_not_overflow():
    policy = Backoff(retry_hours=24, base=5, cap=600)
    assert policy.delay(30, rand=lambda: 1.0) == 600
    assert policy.delay(10**9, rand=lambda: 1.0) == 600
    assert policy.delay(0, rand=lambda: 1.0) == 5  # never below the first step


def test_jitter_spreads_receivers_that_failed_together():
    policy = Backoff()
    rng = random.Random(7)
    delays = {round(policy.delay(3, rand=rng.random), 3) for _ in range(50)}
    assert len(delays) > 40


def test_retries_stop_after_the_configured_hours_then_the_webhook_is_parked():
    policy = Backoff(retry_hours=2, base=5, cap=3600)
    assert policy.next_step(1, failing_for=0, rand=lambda: 1.0) == 5
    assert not policy.gives_up(2 * 3600 - 1)
    assert policy.gives_up(2 * 3600)
    assert policy.next_step(40, failing_for=2 * 3600) is None


def test_the_last_wait_ends_at_the_window_not_past_it():
    policy = Backoff(retry_hours=1, base=5, cap=3600)
    assert policy.next_step(12, failing_for=3600 - 100, rand=lambda: 1.0) == pytest.approx(100)


def test_zero_retry_hours_parks_at_the_first_failure():
    assert Backoff(retry_hours=0).next_step(1, failing_for=0) is None
