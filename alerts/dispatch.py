"""Dispatch: deliver the outbox to the crews' channels, at least once, with backoff, and log every attempt.

A dispatcher claims due outbox rows with a lease (`next_attempt_at` moved past the attempt, in a short
transaction with `FOR UPDATE SKIP LOCKED`), delivers them, then marks them delivered or schedules a retry with
jittered exponential backoff. A dispatcher killed mid-delivery loses nothing: its lease expires and the row is
claimed again. Several dispatchers can run side by side. Receivers deduplicate by the idempotency key.

Channels are transports, the named seam tests swap:
- `webhook`: POST of the JSON body with `X-Lamplighter-Signature: sha256=<HMAC-SHA256 of the body with the crew's
  secret>`, `Idempotency-Key` and `X-Lamplighter-Event`; any 2xx is delivered;
- `notify`: the crew's notification URLs (chat robots such as DingTalk and WeCom, email, …) through Apprise;
- `mqtt`: QoS 1 publish on `sl/crews/{crew}/tickets`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import apprise
import httpx2
import psycopg
from psycopg.rows import dict_row

from alerts.errors import AlertsError
from kernel.backoff import Backoff, backoff_delay
from kernel.database import Database
from kernel.supervise import supervise
from protocol.topics import crew_tickets_topic

__all__ = [
    "DeliveryError",
    "Dispatcher",
    "MqttTransport",
    "NotifyTransport",
    "OutboxItem",
    "Transport",
    "Undeliverable",
    "WebhookTransport",
    "check_target",
    "pinned",
    "redact",
    "sign",
    "verify",
]

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Lamplighter-Signature"
TIMESTAMP_HEADER = "X-Lamplighter-Timestamp"  # Unix seconds; signed with the body, so a replay is told by its age
REPLAY_WINDOW_S = 300
_LEASE = dt.timedelta(seconds=30)  # a claimed row is retried after this if its dispatcher vanished
# An idle dispatcher waits for the outbox's notification (every row queued sends one), and looks anyway this often:
# for retries coming due, and for a notification missed while it reconnected. P1 tickets reach crews within 2 s.
_IDLE_S = 1.0


class DeliveryError(AlertsError):
    """A channel refused or could not take a notification; the dispatcher retries it."""

    kind = "unavailable"


class Undeliverable(DeliveryError):
    """A notification no retry can deliver as it is (larger than the channel takes): dead-lettered at once."""


@dataclass(frozen=True)
class OutboxItem:
    id: int
    ticket_id: int
    event_id: int
    channel: str
    crew_id: str
    idempotency_key: str
    payload: dict[str, Any]
    attempts: int
    created_at: dt.datetime
    webhook_url: str | None
    webhook_secret: str | None
    notify_urls: list[str]

    @property
    def body(self) -> bytes:
        return json.dumps(self.payload, separators=(",", ":"), ensure_ascii=False).encode()


class Transport(Protocol):
    async def send(self, item: OutboxItem) -> str:
        """Deliver or raise DeliveryError; returns a short note for the delivery log."""
        ...


def sign(secret: str, body: bytes, ts: int) -> str:
    """The signature header's value: HMAC-SHA256 under the crew's secret of `{ts}.` followed by the body."""
    return "sha256=" + hmac.new(secret.encode(), str(ts).encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, ts_header: str, signature: str, now: float) -> bool:
    """A receiver's check (docs/using.md, "Ticket webhooks"): the signature matches, and the timestamp is within
    `REPLAY_WINDOW_S` of the receiver's clock, so a request recorded once cannot be replayed later."""
    try:
        ts = int(ts_header)
    except ValueError:
        return False
    return abs(now - ts) <= REPLAY_WINDOW_S and hmac.compare_digest(sign(secret, body, ts), signature)


def redact(url: str) -> str:
    """A URL as logs and delivery records may show it: scheme and host only (robot tokens live in the rest)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}{':' + str(parts.port) if parts.port else ''}/…"


_REFUSED_NETS = "loopback, private, link-local or reserved"


async def check_target(url: str, *, allow_private: bool) -> str | None:
    """Refuse a delivery target whose host resolves to this machine or an internal network (an admin-set URL
    must not reach services that only trust their neighbours), unless the deployment allows it. Returns the
    checked address to connect to (`pinned`), so a name that resolves differently a moment later (DNS
    rebinding) cannot slip past the check; None when private targets are allowed."""
    if allow_private:
        return None
    host = urlsplit(url).hostname
    if not host:
        raise DeliveryError(f"webhook {redact(url)} names no host")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise DeliveryError(f"webhook {redact(url)}: cannot resolve {host}: {exc}") from None
    if not infos:
        raise DeliveryError(f"webhook {redact(url)}: {host} resolves to no address")
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if (
            address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        ):
            raise DeliveryError(
                f"webhook {redact(url)} resolves to {address}, a {_REFUSED_NETS} address: refused "
                "(set LAMPLIGHTER_DELIVERY_ALLOW_PRIVATE=true where crews' receivers live on an internal network)"
            )
    return str(infos[0][4][0])


def pinned(url: str, address: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(URL, headers, request extensions) that reach `url`'s server at `address`: the host in the URL becomes the
    address, the name goes into `Host` and, for https, into TLS's SNI and certificate check."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    ip = f"[{address}]" if ":" in address else address
    netloc = ip + (f":{parts.port}" if parts.port else "")
    headers = {"Host": host + (f":{parts.port}" if parts.port else "")}
    extensions: dict[str, Any] = {"sni_hostname": host} if parts.scheme == "https" else {}
    return parts._replace(netloc=netloc).geturl(), headers, extensions


class WebhookTransport:
    def __init__(self, *, timeout_s: float = 5.0, allow_private: bool = False) -> None:
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self._client: httpx2.AsyncClient | None = None  # made when first needed, again after `close`

    async def send(self, item: OutboxItem) -> str:
        if not item.webhook_url or not item.webhook_secret:
            raise DeliveryError(f"crew {item.crew_id} has no webhook configured any more")
        address = await check_target(item.webhook_url, allow_private=self.allow_private)
        url, host, extensions = pinned(item.webhook_url, address) if address is not None else (item.webhook_url, {}, {})
        body = item.body
        ts = int(time.time())
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(item.webhook_secret, body, ts),
            TIMESTAMP_HEADER: str(ts),
            "Idempotency-Key": item.idempotency_key,
            "X-Lamplighter-Event": str(item.event_id),
            **host,
        }
        try:
            if self._client is None:
                self._client = httpx2.AsyncClient(timeout=self.timeout_s, follow_redirects=False)
            r = await self._client.post(url, content=body, headers=headers, extensions=extensions)
        except httpx2.HTTPError as exc:
            why = str(exc).replace(item.webhook_url, redact(item.webhook_url))
            raise DeliveryError(f"webhook {redact(item.webhook_url)}: {exc.__class__.__name__}: {why}") from exc
        if not 200 <= r.status_code < 300:
            raise DeliveryError(f"webhook {redact(item.webhook_url)} answered {r.status_code}")
        return f"HTTP {r.status_code}"

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


# Apprise schemes whose host part is a server the deployment chose (a receiver, a mail or chat server), as
# opposed to a chat service's token with the service's own public endpoint (dingtalk://, wecombot://, …).
_SELF_HOSTED = {
    f"{base}{tls}"
    for base in ("json", "form", "xml", "ntfy", "gotify", "mqtt", "mmost", "rocket", "matrix", "apprise", "mailto")
    for tls in ("", "s")
}


class NotifyTransport:
    """Chat robots and email through Apprise notification URLs (run in a worker thread: Apprise blocks). A URL
    naming a server of its own (`json://`, `ntfy://`, `mailto://`, …) is checked like a webhook's target first;
    Apprise connects by itself, so that check cannot be pinned to the address it saw."""

    def __init__(self, *, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    async def send(self, item: OutboxItem) -> str:
        if not item.notify_urls:
            raise DeliveryError(f"crew {item.crew_id} has no notification URLs any more")
        for url in item.notify_urls:
            if url.split(":", 1)[0].lower() in _SELF_HOSTED:
                await check_target(url, allow_private=self.allow_private)
        t = item.payload["ticket"]
        e = item.payload["event"]
        title = f"[{t['priority']}] ticket #{t['id']} {e['action']}: {t['fault']} on {t['asset_type']} {t['asset_id']}"
        body = (
            f"{e['note']}\nstatus {t['status']}, district {t['district']}"
            + (f", deadline {t['deadline']}" if t.get("deadline") else "")
            + (f"\nlamps: {', '.join(t['lamps'][:20])}" + (" …" if len(t["lamps"]) > 20 else "") if t["lamps"] else "")
        )

        def notify() -> bool:
            ap = apprise.Apprise()
            for url in item.notify_urls:
                if not ap.add(url):
                    raise DeliveryError(
                        f"not a usable notification URL for crew {item.crew_id}: {url.split(':')[0]}://…"
                    )
            return bool(ap.notify(title=title, body=body))

        if not await asyncio.to_thread(notify):
            raise DeliveryError(f"{len(item.notify_urls)} notification URL(s) of crew {item.crew_id} failed")
        return f"{len(item.notify_urls)} notification URL(s)"


Publish = Callable[[str, bytes], Awaitable[None]]


class MqttTransport:
    """QoS 1 publishes on `sl/crews/{crew}/tickets` through `publish(topic, body)`, which completes when the
    broker acknowledged it (the gateway's outbound link: `CommandLink.send`)."""

    def __init__(self, publish: Publish, *, timeout_s: float = 5.0) -> None:
        self.publish = publish
        self.timeout_s = timeout_s

    async def send(self, item: OutboxItem) -> str:
        topic = crew_tickets_topic(item.crew_id)
        try:
            async with asyncio.timeout(self.timeout_s):  # not wait_for: it can lose a cancel (Python 3.11)
                await self.publish(topic, item.body)
        except TimeoutError:
            raise DeliveryError(f"the broker did not acknowledge {topic} within {self.timeout_s:.0f} s") from None
        except ConnectionError as exc:  # the link's MqttError
            if getattr(exc, "permanent", False):  # too large for the broker: it never will be smaller
                raise Undeliverable(f"broker: {exc}") from exc
            raise DeliveryError(f"broker: {exc}") from exc
        return topic


class Dispatcher:
    """Delivers the outbox until cancelled."""

    def __init__(
        self,
        db: Database,
        transports: Mapping[str, Transport],
        *,
        backoff_min_s: float = 1.0,
        backoff_max_s: float = 30.0,
        batch: int = 50,
        lease: dt.timedelta = _LEASE,
        max_attempts: int = 50,
        max_age: dt.timedelta = dt.timedelta(hours=24),
    ) -> None:
        self.db = db
        self.transports = dict(transports)
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.batch = batch
        self.lease = lease
        # A delivery still failing after this many attempts, or this long after its event, is dead-lettered:
        # kept with its log on the ticket (`dead_at`), counted, and no longer retried.
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.delivered = 0
        self.failed_attempts = 0
        self.dead_lettered = 0

    async def run(self) -> None:
        """On a connection of its own that listens to the outbox: a queued notification wakes it at once, and an
        idle one costs a claim a second (polling five times a second from the pool took 7 % of a busy gateway's
        CPU, with the pool's check of each connection)."""
        backoff = Backoff()
        try:
            await supervise(functools.partial(self._connected, backoff), what="dispatcher", backoff=backoff)
        finally:
            await self.close()

    async def _connected(self, backoff: Backoff) -> None:
        async with await self.db.dedicated("dispatch") as conn:
            await self._serve(conn, backoff)

    async def _serve(self, conn: psycopg.AsyncConnection, backoff: Backoff) -> None:
        await conn.execute("LISTEN lamplighter_outbox")
        while True:
            done = await self.deliver_due(conn)
            backoff.ok()
            if done == 0:  # a notification that came during the claim may be gone: the next look is 1 s away
                async for _ in conn.notifies(timeout=_IDLE_S, stop_after=1):
                    pass

    async def close(self) -> None:
        """Close the transports that hold connections (the dispatcher owns them)."""
        for t in self.transports.values():
            closer = getattr(t, "close", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer()

    async def deliver_due(self, conn: psycopg.AsyncConnection) -> int:
        """Claim and deliver what is due now; returns how many rows were attempted."""
        items = await self._claim(conn)
        if items:
            await asyncio.gather(*(self._deliver(conn, item) for item in items))
        return len(items)

    async def _claim(self, conn: psycopg.AsyncConnection) -> list[OutboxItem]:
        async with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(
                """WITH due AS (
                       SELECT id FROM outbox
                       WHERE delivered_at IS NULL AND dead_at IS NULL AND next_attempt_at <= now()
                       ORDER BY next_attempt_at, id LIMIT %s FOR UPDATE SKIP LOCKED)
                   UPDATE outbox o SET attempts = o.attempts + 1, next_attempt_at = now() + %s
                   FROM due WHERE o.id = due.id
                   RETURNING o.id, o.ticket_id, o.event_id, o.channel, o.crew_id, o.idempotency_key, o.payload,
                             o.attempts, o.created_at,
                             (SELECT webhook_url FROM crews c WHERE c.id = o.crew_id) AS webhook_url,
                             (SELECT webhook_secret FROM crews c WHERE c.id = o.crew_id) AS webhook_secret,
                             coalesce((SELECT notify_urls FROM crews c WHERE c.id = o.crew_id), '{}') AS notify_urls""",
                (self.batch, self.lease),
            )
            rows = await cur.fetchall()
        return [OutboxItem(**r) for r in rows]

    async def _deliver(self, conn: psycopg.AsyncConnection, item: OutboxItem) -> None:
        transport = self.transports.get(item.channel)
        started = time.perf_counter()
        hopeless = False
        try:
            if transport is None:
                raise DeliveryError(f"no transport for channel {item.channel} in this dispatcher")
            note = await transport.send(item)
            ok = True
        except Undeliverable as exc:
            note, ok, hopeless = str(exc), False, True
        except DeliveryError as exc:
            note, ok = str(exc), False
        except Exception as exc:  # a transport's bug must not stop the others; the row is retried
            logger.exception("dispatcher: %s delivery of outbox row %d failed unexpectedly", item.channel, item.id)
            note, ok = f"{exc.__class__.__name__}: {exc}", False
        elapsed_ms = (time.perf_counter() - started) * 1000
        if ok:
            self.delivered += 1
            await conn.execute("UPDATE outbox SET delivered_at = now(), last_error = NULL WHERE id = %s", (item.id,))
            logger.debug(
                "delivered outbox row %d (ticket %d) by %s to crew %s",
                item.id,
                item.ticket_id,
                item.channel,
                item.crew_id,
            )
        elif (
            hopeless or item.attempts >= self.max_attempts or dt.datetime.now(dt.UTC) - item.created_at >= self.max_age
        ):
            self.failed_attempts += 1
            self.dead_lettered += 1
            await conn.execute("UPDATE outbox SET dead_at = now(), last_error = %s WHERE id = %s", (note, item.id))
            logger.error(
                "dispatcher: %s to crew %s for ticket %d dead-lettered after %d attempts: %s",
                item.channel,
                item.crew_id,
                item.ticket_id,
                item.attempts,
                note,
            )
        else:
            self.failed_attempts += 1
            backoff = backoff_delay(item.attempts, self.backoff_min_s, self.backoff_max_s)
            await conn.execute(
                "UPDATE outbox SET next_attempt_at = now() + make_interval(secs => %s), last_error = %s WHERE id = %s",
                (backoff, note, item.id),
            )
            logger.warning(
                "dispatcher: %s to crew %s for ticket %d failed (attempt %d, retry in %.1f s): %s",
                item.channel,
                item.crew_id,
                item.ticket_id,
                item.attempts,
                backoff,
                note,
            )
        await conn.execute(
            "INSERT INTO deliveries (outbox_id, ticket_id, attempt, ok, detail, duration_ms) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (item.id, item.ticket_id, item.attempts, ok, note, elapsed_ms),
        )
