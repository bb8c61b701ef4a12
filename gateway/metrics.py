"""The gateway's counters, exposed as Prometheus text at /metrics."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

__all__ = ["GatewayMetrics"]

# Publish → commit latencies kept for the exact quantiles (a ring of the most recent readings).
_LATENCY_RING = 1 << 20


class _LatencyQuantiles(Collector):
    def __init__(self, owner: GatewayMetrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[GaugeMetricFamily]:
        g = GaugeMetricFamily(
            "lamplighter_gateway_commit_latency_ms",
            "Device timestamp to batch commit, over the most recent readings (exact quantiles)",
            labels=["quantile"],
        )
        for q, v in self.owner.latency_quantiles().items():
            g.add_metric([q], v)
        yield g


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter("lamplighter_gateway_messages_received", "MQTT messages received", registry=r)
        self.written = Counter(
            "lamplighter_gateway_readings_written", "Readings committed to PostgreSQL", ["kind"], registry=r
        )
        self.rejected = Counter(
            "lamplighter_gateway_rejected", "Messages or embedded lamp reports quarantined", ["reason"], registry=r
        )
        self.duplicates = Counter(
            "lamplighter_gateway_duplicates", "Readings dropped as already stored", ["kind"], registry=r
        )
        self.statuses = Counter("lamplighter_gateway_status_messages", "Online/offline status messages", registry=r)
        self.commit_errors = Counter(
            "lamplighter_gateway_commit_errors", "Batches the database refused (retried)", registry=r
        )
        self.batch_size = Histogram(
            "lamplighter_gateway_batch_messages",
            "Messages per committed batch",
            buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000, 50000),
            registry=r,
        )
        self.commit_seconds = Histogram(
            "lamplighter_gateway_commit_seconds",
            "Time to write and commit a batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=r,
        )
        self.lag = Gauge(
            "lamplighter_gateway_lag_seconds",
            "Age of the newest reading of the last committed batch at commit",
            registry=r,
        )
        self.db_refused = Counter(
            "lamplighter_gateway_db_refused",
            "Messages the database refused for their data, found by splitting their batch and quarantined",
            registry=r,
        )
        self.dropped = Counter(
            "lamplighter_gateway_dropped",
            "Messages whose quarantine record the database refused too, acknowledged so nothing waits behind them",
            registry=r,
        )
        self.oldest_uncommitted = Gauge(
            "lamplighter_gateway_oldest_uncommitted_seconds",
            "Age of the oldest message received and not yet committed: grows while ingest is stalled",
            registry=r,
        )
        self.failing_batches = Gauge(
            "lamplighter_gateway_failing_batches",
            "Batch writes failed in a row (0 while ingest is healthy)",
            registry=r,
        )
        self.qos0_dropped = Counter(
            "lamplighter_gateway_qos0_dropped",
            "QoS 0 messages dropped from a full queue while ingest could not keep up (the oldest first)",
            registry=r,
        )
        self.acks_dropped = Gauge(
            "lamplighter_gateway_command_acks_dropped",
            "Command acknowledgements dropped from a full queue (the oldest first; retries cover them)",
            registry=r,
        )
        self.dead_letters = Gauge(
            "lamplighter_dispatch_dead_letters",
            "Ticket notifications set aside after their delivery limits (shown on the ticket)",
            registry=r,
        )
        self.pending = Gauge("lamplighter_gateway_pending_messages", "Received, not yet committed", registry=r)
        self.last_commit = Gauge(
            "lamplighter_gateway_last_commit_timestamp_seconds",
            "Wall-clock time (Unix seconds) at which the last batch was committed",
            registry=r,
        )
        self._lat = np.zeros(_LATENCY_RING, dtype=np.float32)
        self._lat_n = 0
        r.register(_LatencyQuantiles(self))

    def record_latencies(self, latencies_ms: np.ndarray) -> None:
        n = len(latencies_ms)
        if n == 0:
            return
        if n >= _LATENCY_RING:
            self._lat[:] = latencies_ms[-_LATENCY_RING:]
        else:
            start = self._lat_n % _LATENCY_RING
            end = start + n
            if end <= _LATENCY_RING:
                self._lat[start:end] = latencies_ms
            else:
                cut = _LATENCY_RING - start
                self._lat[start:] = latencies_ms[:cut]
                self._lat[: n - cut] = latencies_ms[cut:]
        self._lat_n += n

    def latency_quantiles(self) -> dict[str, float]:
        n = min(self._lat_n, _LATENCY_RING)
        if n == 0:
            return {}
        qs = np.quantile(self._lat[:n], [0.5, 0.9, 0.99, 1.0])
        return {"0.5": float(qs[0]), "0.9": float(qs[1]), "0.99": float(qs[2]), "1": float(qs[3])}
