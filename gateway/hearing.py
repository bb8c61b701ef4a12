"""Whether ingest hears the devices, said to whoever must not take our outage for theirs.

Ingest hears devices while its broker sessions are connected, no batch write is failing and no message has waited
uncommitted for longer than `stall_s`. When it stops, `pause(since_ms)` is told from when nothing more was heard
(the fault engine then counts nobody silent); when it hears again, `resume(now_ms)` returns how long the outage
was, and that is logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.service import Gateway
from kernel.supervise import supervise

__all__ = ["HearingWatch"]

logger = logging.getLogger(__name__)


class HearingWatch:
    def __init__(
        self,
        connected: asyncio.Event,
        gateway: Gateway,
        *,
        pause: Callable[[int], None],
        resume: Callable[[int], int | None],
        now_ms: Callable[[], int],
        stall_s: float = 2.0,
        every_s: float = 0.2,
    ) -> None:
        self.connected, self.gateway = connected, gateway
        self.pause, self.resume, self.now_ms = pause, resume, now_ms
        self.stall_s, self.every_s = stall_s, every_s
        self.heard_once = False  # since this process started

    async def run(self) -> None:
        """Until cancelled."""
        await supervise(self._check, what="the ingest watch", every_s=self.every_s)

    async def _check(self) -> None:
        self.check()

    def hearing(self) -> bool:
        g = self.gateway
        return self.connected.is_set() and g.failing_batches == 0 and g.oldest_uncommitted_s() < self.stall_s

    def check(self) -> None:
        hearing = self.hearing()
        if not hearing:
            self.pause(min(self.now_ms(), self.gateway.ingested_through_ms()))
        elif (gap := self.resume(self.now_ms())) is not None and gap > 0:
            if self.heard_once:
                logger.info("ingest hears devices again: %.0f s of outage not counted as silence", gap / 1000)
            else:  # the start itself, not an outage
                logger.info("ingest hears devices (%.0f s after start, not counted as silence)", gap / 1000)
        self.heard_once |= hearing
