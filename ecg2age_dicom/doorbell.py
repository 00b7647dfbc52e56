"""The doorbell the listener rings when work arrives, and idle workers wait on."""

from __future__ import annotations

import multiprocessing


class Doorbell:
    """Wakes idle workers, in this process or in worker processes, when work arrives.

    A semaphore rather than an Event: ringing is one ``sem_post``, so a process killed while
    ringing leaves no lock held that the others would wait on for ever.
    """

    def __init__(self) -> None:
        self._rings = multiprocessing.get_context("spawn").Semaphore(0)

    def ring(self) -> None:
        self._rings.release()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a ring; True if rung. Rings so far count as one."""
        rung = self._rings.acquire(timeout=timeout_s)
        while self._rings.acquire(block=False):
            pass
        return rung
