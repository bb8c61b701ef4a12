"""The retained messages the backend publishes: one topic's latest value, QoS 1, through aiomqtt."""

from __future__ import annotations

import asyncio
import logging
import random

import aiomqtt

__all__ = ["RetainedPublisher"]

logger = logging.getLogger(__name__)


class RetainedPublisher:
    """Publishes the latest value of one topic, retained, QoS 1, through aiomqtt; reconnects on its own.

    Only the newest value matters to a display, so values set while disconnected collapse into one.
    """

    def __init__(self, host: str, port: int, topic: str, client_id: str) -> None:
        self.host, self.port, self.topic, self.client_id = host, port, topic, client_id
        self._latest: bytes | None = None
        self._ready = asyncio.Event()
        self.published = 0

    def set(self, payload: bytes) -> None:
        self._latest = payload
        self._ready.set()

    async def run(self) -> None:
        delay = 0.5
        while True:
            await self._ready.wait()  # connect only once there is something to say
            try:
                async with aiomqtt.Client(self.host, self.port, identifier=self.client_id) as client:
                    delay = 0.5
                    while True:
                        await self._ready.wait()
                        self._ready.clear()
                        if self._latest is not None:
                            await client.publish(self.topic, self._latest, qos=1, retain=True)
                            self.published += 1
            except aiomqtt.MqttError as exc:
                logger.warning("ops publisher: %s (reconnecting in %.1f s)", exc, delay)
                self._ready.set()  # publish the newest value once back
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, 30.0)
