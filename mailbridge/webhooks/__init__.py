"""Signed webhooks: the `events` table delivered as an outbox to HTTP receivers.

`signing` and `backoff` are pure; `delivery` is the trio worker `serve` runs; `payloads`
turns event rows into the JSON a receiver gets; `commands` is `mailbridge webhooks ...`.
The SQL lives in `mailbridge.store.webhooks`.
"""
