"""The Celery ping behind /api/health, cached: a broadcast waits its whole timeout, and pages poll health often."""
from __future__ import annotations

import threading
import time

from celery import Celery

PING_TIMEOUT_SECONDS = 0.5  # how long one broadcast waits for replies
PING_CACHE_SECONDS = 10.0  # a reply list is reused this long (per web process)


class CachedPing:
    """Worker names that answered a Celery ping, broadcast at most once per `max_age` seconds.

    While one thread broadcasts, the others answer with the previous list instead of waiting.
    """

    def __init__(self, celery: Celery, max_age: float = PING_CACHE_SECONDS) -> None:
        self.celery = celery
        self.max_age = max_age
        self._names: list[str] = []
        self._at = float("-inf")
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The answering workers' names, sorted (empty when the broadcast fails)."""
        if time.monotonic() - self._at < self.max_age or not self._lock.acquire(blocking=False):
            return self._names
        try:
            self._names = self._broadcast()
            self._at = time.monotonic()
        finally:
            self._lock.release()
        return self._names

    def _broadcast(self) -> list[str]:
        try:
            replies = self.celery.control.ping(timeout=PING_TIMEOUT_SECONDS) or []
        except Exception:  # the heartbeats are the primary signal; ping is a courtesy
            return []
        return sorted(name for reply in replies for name in reply)
