"""Rate limits per caller: a token bucket each, in this process's memory.

With several API processes each enforces its own buckets, so the effective limit is
the per-process one times the processes; a shared limit would keep the buckets in Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimits:
    """Per caller: ``burst`` calls at once, refilled at ``per_second``."""

    per_second: float = 5.0
    burst: int = 30


class TokenBuckets:
    """One token bucket per caller name, in process memory."""

    def __init__(self, limits: RateLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, name: str) -> float:
        """Take one token: 0 when allowed, else the seconds until one is available."""
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(name, (float(self.limits.burst), now))
            tokens = min(float(self.limits.burst), tokens + (now - then) * self.limits.per_second)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) / self.limits.per_second
