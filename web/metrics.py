"""Prometheus metrics of the HTTP API (prometheus_client's default registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from actors.registry import Registry

HTTP_REQUESTS = Counter("mailbridge_http_requests_total", "HTTP requests answered",
                        ["method", "route", "status"])
HTTP_SECONDS = Histogram("mailbridge_http_request_duration_seconds", "Time to answer an HTTP request",
                         ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))
BODY_FETCHES = Counter("mailbridge_body_fetches_total", "Body fetches through the owning actor, by outcome",
                       ["outcome"])
ACTORS = Gauge("mailbridge_actors", "Actors of this process by state", ["state"])
ACTOR_RESTARTS = Gauge("mailbridge_actor_restarts", "Restarts of each account's actor", ["account"])
SEARCH_BACKLOG = Gauge("mailbridge_search_index_backlog",
                       "Messages whose search document the indexer has not built yet (search is exact meanwhile)")
MAILBOX_DEPTH = Gauge("mailbridge_actor_mailbox_depth", "Requests waiting in each account's actor mailbox",
                      ["account"])

METHOD_LABELS = frozenset({"GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"})  # else "other"


def method_label(method: str) -> str:
    """The request method as a label: one of METHOD_LABELS or "other" (a client must not
    grow the label set by inventing methods)."""
    return method if method in METHOD_LABELS else "other"


def scrape(registry: Registry, search_backlog: int | None = None) -> bytes:
    """The text exposition, with the actor gauges refreshed from the registry first (and
    the search backlog, when the database answered)."""
    from actors.status import STATES

    counts = {state: 0 for state in STATES}
    ACTOR_RESTARTS.clear()
    MAILBOX_DEPTH.clear()
    for snap in registry.snapshots():
        counts[snap.state] = counts.get(snap.state, 0) + 1
        ACTOR_RESTARTS.labels(str(snap.account_id)).set(snap.restarts)
        MAILBOX_DEPTH.labels(str(snap.account_id)).set(registry.mailbox_depth(snap.account_id))
    for state, n in counts.items():
        ACTORS.labels(state).set(n)
    if search_backlog is not None:
        SEARCH_BACKLOG.set(search_backlog)
    return generate_latest()


__all__ = ["BODY_FETCHES", "CONTENT_TYPE_LATEST", "HTTP_REQUESTS", "HTTP_SECONDS", "METHOD_LABELS", "method_label",
           "scrape"]
