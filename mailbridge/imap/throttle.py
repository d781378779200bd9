"""The per-account IMAP command throttle: a token bucket with a hard per-minute bound.

The bucket holds at most `burst` tokens and starts full; it refills continuously at
``(per_minute - burst + 1) / 60`` tokens per second; a command of cost c takes c tokens.

Guarantee: in any 60-second window [t, t + 60) commands of total cost at most
`per_minute` pass.  Proof: at t the bucket holds at most `burst` tokens; during the
window less than 60 · rate = per_minute − burst + 1 tokens are added (the window is
open at its end); the bucket never goes below zero, so the cost granted in the window
is below burst + per_minute − burst + 1 = per_minute + 1, and, being an integer, is at
most per_minute.  (Up to float rounding: a grant may come 1e-9 token early.)

So the sustained rate is per_minute − burst + 1 commands a minute, and `burst` commands
can go at once after a quiet spell.  The default burst is per_minute // 6 (at least 1):
with the default 200/min that is 33 at once, then 168/min.  burst=1 gives exactly
per_minute evenly spaced.

Waiters are served first come, first served.  Cancelling a waiting `acquire` consumes
nothing.
"""

from __future__ import annotations

from typing import Callable

import trio

_EPS = 1e-9


def default_burst(per_minute: int) -> int:
    """The burst of a Throttle of `per_minute` built without one: per_minute // 6, at least 1."""
    return max(1, per_minute // 6)


class Throttle:
    """A token bucket for one account's IMAP commands (see the module doc for the bound)."""

    def __init__(
        self,
        per_minute: int,
        *,
        burst: int | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        if burst is None:
            burst = default_burst(per_minute)
        if not 1 <= burst <= per_minute:
            raise ValueError("burst must be between 1 and per_minute")
        self._per_minute = per_minute
        self._burst = burst
        self._rate = (per_minute - burst + 1) / 60.0  # tokens per second
        self._clock = clock
        self._tokens = float(burst)
        self._stamp: float | None = None  # clock reading of the last refill
        self._queue = trio.Lock()  # FIFO: the waiter at its head sleeps for tokens
        self._commands = 0
        self._waits = 0

    # --- configuration and statistics ----------------------------------------------------

    @property
    def per_minute(self) -> int:
        return self._per_minute

    @property
    def burst(self) -> int:
        return self._burst

    @property
    def rate(self) -> float:
        """Refill rate in tokens per second."""
        return self._rate

    @property
    def commands(self) -> int:
        """Total cost granted so far."""
        return self._commands

    @property
    def waits(self) -> int:
        """How many `acquire` calls had to wait."""
        return self._waits

    @property
    def available(self) -> float:
        """Tokens in the bucket now (for status displays)."""
        self._refill()
        return max(0.0, self._tokens)

    # --- granting ------------------------------------------------------------------------

    def _check(self, cost: int) -> None:
        if not 1 <= cost <= self._burst:
            raise ValueError(f"cost must be between 1 and burst ({self._burst}), not {cost}")

    def _refill(self) -> float:
        now = self._clock()
        if self._stamp is None:
            self._stamp = now
        elif now > self._stamp:
            self._tokens = min(float(self._burst), self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
        return now

    def _take(self, cost: int) -> bool:
        self._refill()
        if self._tokens + _EPS >= cost:
            self._tokens -= cost
            self._commands += cost
            return True
        return False

    async def acquire(self, cost: int = 1) -> float:
        """Wait until `cost` commands may go, take them, and return the seconds waited.

        Raises ValueError when cost is below 1 or above burst (it could never go).
        Cancellation while waiting takes nothing.
        """
        self._check(cost)
        start = self._clock()
        waited = self._queue.locked()  # queued behind another waiter
        async with self._queue:
            while not self._take(cost):
                waited = True
                await trio.sleep((cost - self._tokens) / self._rate)
        if not waited:
            return 0.0
        self._waits += 1
        return max(0.0, self._clock() - start)

    def __repr__(self) -> str:
        return (
            f"Throttle(per_minute={self._per_minute}, burst={self._burst}, "
            f"commands={self._commands}, waits={self._waits})"
        )


__all__ = ["Throttle"]
