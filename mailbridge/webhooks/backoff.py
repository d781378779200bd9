"""When to try a failing webhook again, and when to give up (pure).

Exponential backoff with jitter: the n-th consecutive failure waits
``min(cap, base * 2 ** (n - 1))`` seconds scaled by a random factor in [0.5, 1] (no two
receivers' retries fall in step).  Once the event due has failed for longer than
`retry_hours` (MAILBRIDGE_WEBHOOK_RETRY_HOURS), the webhook is parked: no more tries
until `mailbridge webhooks resume`, the last error kept for `GET /webhooks/{id}`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

BASE_SECONDS = 5.0
CAP_SECONDS = 3600.0
_JITTER = random.Random()  # our own: the global generator's state is the callers'


@dataclass(frozen=True, slots=True)
class Backoff:
    """The retry policy of one process (every webhook the same)."""

    retry_hours: float = 24.0
    base: float = BASE_SECONDS
    cap: float = CAP_SECONDS

    def delay(self, attempts: int, rand: Callable[[], float] = _JITTER.random) -> float:
        """Seconds to wait after the `attempts`-th consecutive failure (1, 2, ...)."""
        exponent = min(max(attempts, 1) - 1, 60)
        full = min(self.cap, self.base * 2.0 ** exponent)
        return full * (0.5 + 0.5 * rand())

    def gives_up(self, failing_for: float) -> bool:
        """Whether an event that has failed for `failing_for` seconds is parked now."""
        return failing_for >= self.retry_hours * 3600.0

    def next_step(self, attempts: int, failing_for: float,
                  rand: Callable[[], float] = _JITTER.random) -> float | None:
        """Seconds until the next try after the `attempts`-th failure, or None: park.
        The last try is never pushed past the retry window's end by much: a wait that
        would end after it is cut to end there (one last try at the end)."""
        if self.gives_up(failing_for):
            return None
        wait = self.delay(attempts, rand)
        left = self.retry_hours * 3600.0 - failing_for
        return min(wait, max(left, 0.0))


__all__ = ["BASE_SECONDS", "CAP_SECONDS", "Backoff"]
