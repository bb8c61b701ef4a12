"""The retained messages the backend publishes: one topic's latest value, QoS 1, over the outbound link."""

from __future__ import annotations

import asyncio
import logging

from gateway.command_link import CommandLink
from gateway.mqtt import MqttError
from kernel.backoff import Backoff
from kernel.supervise import supervise

__all__ = ["RetainedPublisher"]

logger = logging.getLogger(__name__)

_PUBACK_WAIT_S = 10.0


class RetainedPublisher:
    """Publishes the latest value of one topic, retained, QoS 1, on the gateway's outbound link.

    Only the newest value matters to a display, so values set while the link is down collapse into one, sent
    once it is back.
    """

    def __init__(self, link: CommandLink, topic: str) -> None:
        self.link, self.topic = link, topic
        self._latest: bytes | None = None
        self._ready = asyncio.Event()
        self.published = 0

    def set(self, payload: bytes) -> None:
        self._latest = payload
        self._ready.set()

    async def run(self) -> None:
        await supervise(self._publish_newest, what="ops publisher", backoff=Backoff())

    async def _publish_newest(self) -> None:
        await self._ready.wait()
        self._ready.clear()
        payload = self._latest
        if payload is None:
            return
        await self.link.wait_ready()
        try:
            # asyncio.timeout, not wait_for: on 3.11 wait_for loses a cancel that comes just as the PUBACK does,
            # and this task then outlived its task group (a gateway that never stopped).
            async with asyncio.timeout(_PUBACK_WAIT_S):
                await self.link.send(self.topic, payload, retain=True)
        except (MqttError, TimeoutError) as exc:
            if not self._ready.is_set():
                self._ready.set()  # the newest value goes once back (a newer one may replace it meanwhile)
            raise MqttError(str(exc) or "no PUBACK") from exc
        self.published += 1
