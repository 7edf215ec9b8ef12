"""Prometheus metrics: per CRI operation (like CRI-O's operations metrics) and
per transaction step.

Each daemon owns a CollectorRegistry, so several daemons (tests) can live in one
process without clashing on the global registry.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from podrt.rollback import TxReport

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# fine around the 0.5-50 ms a blocked loop shows: p99 < 5 ms is the target (issue 20)
_LAG_BUCKETS = (0.00025, 0.0005, 0.001, 0.0015, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03,
                0.05, 0.1, 0.25, 0.5, 1, 2.5)
LAG_PROBE_INTERVAL = 0.01


class Metrics:
    """The daemon's metric families."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.operations = Counter(
            "podrt_operations_total",
            "CRI operations handled, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.operation_errors = Counter(
            "podrt_operations_errors_total",
            "CRI operations that ended with a non-OK gRPC status.",
            ["operation", "code"],
            registry=self.registry,
        )
        self.operation_latency = Histogram(
            "podrt_operations_latency_seconds",
            "Latency of CRI operations, by operation.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.step_duration = Histogram(
            "podrt_step_duration_seconds",
            "Duration of transaction steps (do and undo), by transaction kind and step.",
            ["transaction", "step", "phase", "ok"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.transactions = Counter(
            "podrt_transactions_total",
            "Transactions run, by kind and outcome.",
            ["transaction", "outcome"],
            registry=self.registry,
        )
        self.container_events_dropped = Counter(
            "podrt_container_events_dropped_total",
            "Container events a slow GetContainerEvents subscriber lost (its queue was full; the oldest went).",
            registry=self.registry,
        )
        self.stream_sessions = Gauge(
            "podrt_streaming_sessions_open",
            "Streaming sessions open, by kind (exec, attach, portforward).",
            ["kind"],
            registry=self.registry,
        )
        self.stream_sessions_total = Counter(
            "podrt_streaming_sessions_total",
            "Streaming sessions opened, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.stream_bytes = Counter(
            "podrt_streaming_bytes_total",
            "Bytes moved on streaming connections, by kind and direction (in: from the client).",
            ["kind", "direction"],
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "podrt_event_loop_lag_seconds",
            f"How late the event loop ran a timer callback due every {LAG_PROBE_INTERVAL * 1000:g} ms "
            "(callbacks holding the loop; its thread waiting for a CPU or the GIL).",
            buckets=_LAG_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag_max = Gauge(
            "podrt_event_loop_lag_max_seconds",
            "The longest event loop lag seen since the daemon started.",
            registry=self.registry,
        )
        self._http: Any = None

    def observe_operation(self, operation: str, seconds: float, code: str) -> None:
        self.operations.labels(operation).inc()
        self.operation_latency.labels(operation).observe(seconds)
        if code != "OK":
            self.operation_errors.labels(operation, code).inc()

    # rollback.TxObserver
    def step_finished(self, tx_kind: str, step: str, phase: str, seconds: float, ok: bool) -> None:
        self.step_duration.labels(tx_kind, step, phase, str(ok).lower()).observe(seconds)

    def tx_finished(self, report: TxReport) -> None:
        self.transactions.labels(report.kind, report.outcome).inc()

    async def probe_loop_lag(self, interval: float = LAG_PROBE_INTERVAL) -> None:
        """Every `interval`, a timer callback records how late the loop ran it
        (its due time to its start): the callbacks that held the loop meanwhile,
        and the time the loop's thread waited for a CPU or the GIL, delay every
        RPC as much. A plain callback, not a sleeping task: a task's wake-up is
        a second callback a loop turn later, which would count a turn twice.
        asyncio waits for timers in whole milliseconds (rounded up), so an idle
        loop shows 0-1 ms. Run with metrics on only: 100 callbacks a second are
        cheap, not free."""
        loop = asyncio.get_running_loop()
        worst = 0.0
        timer: asyncio.TimerHandle | None = None

        def due(when: float) -> None:
            nonlocal worst, timer
            now = loop.time()
            lag = max(0.0, now - when)
            self.loop_lag.observe(lag)
            if lag > worst:
                worst = lag
                self.loop_lag_max.set(lag)
            timer = loop.call_at(now + interval, due, now + interval)

        first = loop.time() + interval
        timer = loop.call_at(first, due, first)
        try:
            await loop.create_future()  # until cancelled
        finally:
            timer.cancel()

    def serve(self, host: str, port: int) -> None:
        """Expose Prometheus text on host:port (a thread of prometheus_client's)."""
        self._http = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
