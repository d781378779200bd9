"""Prometheus metrics (prometheus_client's default registry, served at ``/metrics``).

Counters that code increments as things happen live here as module globals.  What the
actors already keep in their status snapshots (restarts, throttle waits, health,
per-folder progress) is read at scrape time by `SnapshotCollector`, so there is one
source of truth and no double bookkeeping.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

MESSAGES = Counter("mailbridge_messages", "Messages written to the mirror, by kind of change",
                   ["kind"])  # added, changed, removed
IMAP_COMMANDS = Counter("mailbridge_imap_commands", "IMAP commands sent, by command", ["command"])
ERRORS = Counter("mailbridge_errors", "Errors by kind (the error type)", ["kind"])
CYCLE_SECONDS = Histogram("mailbridge_cycle_seconds", "Duration of one account's sync cycle",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900))
WEBHOOK_DELIVERIES = Counter("mailbridge_webhook_deliveries",
                             "Webhook delivery attempts by webhook and outcome (delivered, failed, parked)",
                             ["webhook", "outcome"])
WEBHOOK_SECONDS = Histogram("mailbridge_webhook_delivery_seconds", "Time a webhook receiver took to answer",
                            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))

HEALTHS = ("starting", "standby", "syncing", "healthy", "degraded", "auth_failed", "unreachable",
           "disabled", "over_limit", "unowned")


def count_step(added: int, changed: int, removed: int) -> None:
    if added:
        MESSAGES.labels("added").inc(added)
    if changed:
        MESSAGES.labels("changed").inc(changed)
    if removed:
        MESSAGES.labels("removed").inc(removed)


class SnapshotCollector(Collector):
    """Per-account figures read from the actors' latest snapshots at scrape time."""

    def __init__(self, snapshots: Callable[[], Iterable]) -> None:
        self._snapshots = snapshots

    def collect(self) -> Iterator[Metric]:
        restarts = CounterMetricFamily("mailbridge_actor_restarts", "Actor restarts after a crash",
                                       labels=["account_id"])
        waits = CounterMetricFamily("mailbridge_throttle_waits", "IMAP commands that waited for the throttle",
                                    labels=["account_id"])
        accounts = GaugeMetricFamily("mailbridge_accounts", "Accounts by health", labels=["health"])
        lag = GaugeMetricFamily("mailbridge_folder_lag_seconds",
                                "Seconds since the folder was last brought up to date",
                                labels=["account_id", "folder"])
        by_health = dict.fromkeys(HEALTHS, 0)
        now = datetime.now(timezone.utc)
        for status in self._snapshots():
            if status.state == "elsewhere":
                continue  # another process syncs it and reports it
            account = str(status.account_id)
            restarts.add_metric([account], status.restarts)
            waits.add_metric([account], status.throttle_waits)
            by_health[status.health] = by_health.get(status.health, 0) + 1
            for progress in status.folders:
                if progress.synced_at is not None:
                    lag.add_metric([account, progress.name], (now - progress.synced_at).total_seconds())
        for health, n in by_health.items():
            accounts.add_metric([health], n)
        yield from (restarts, waits, accounts, lag)

    def describe(self) -> list[Metric]:
        return []


_installed: list[SnapshotCollector] = []


def install_snapshot_collector(snapshots: Callable[[], Iterable]) -> None:
    """Register (once per process; a later call replaces the source) the snapshot collector."""
    for old in _installed:
        REGISTRY.unregister(old)
    _installed.clear()
    collector = SnapshotCollector(snapshots)
    REGISTRY.register(collector)
    _installed.append(collector)


__all__ = ["CYCLE_SECONDS", "ERRORS", "IMAP_COMMANDS", "MESSAGES", "SnapshotCollector", "count_step",
           "install_snapshot_collector"]
