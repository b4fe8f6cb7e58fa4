"""The server's counters and histograms, exposed through `prometheus_client` for `GET /metrics`.

Counters of requests, tokens and finished sequences, gauges of the queue and the running batch,
histograms of time to first token and request latency, and generated tokens per second over the last
10 seconds. Names follow vLLM's (`vllm:time_to_first_token_seconds`, ...) with our prefix, so existing
dashboards map over.

The engine and the routes update plain attributes (``metrics.prompt_tokens += n``,
``metrics.requests[(endpoint, status)] += 1``) on their hot paths; a collector turns them into metric
families when /metrics is scraped. Each `ServerMetrics` has its own registry, so several servers (or
tests) in one process do not share counts.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque

from cerebras_gpt.extras import require_extra

PREFIX = "cerebras_gpt"
# The exposition format generate_latest writes (text 0.0.4), the content type /metrics answers with.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """Everything `/metrics` reports; the engine and the routes update it."""

    WINDOW = 10.0  # seconds over which tokens/s is measured

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)  # (endpoint, HTTP status) -> count
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.finished: dict[str, int] = defaultdict(int)  # finish reason ("cancelled" too) -> sequences
        self.rejected = 0
        self.queue_depth = 0
        self.running = 0
        self.slots_total = 0
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()
        # Imported here, not at the top: `serve --help` (which imports the engine) works without the extra.
        require_extra("serve", "prometheus_client", feature="the server's /metrics")
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry()
        self.ttft = Histogram(
            f"{PREFIX}_time_to_first_token_seconds",
            "From arrival to the first token.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=self.registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "From arrival to the last token.",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    def add_generated(self, n: int) -> None:
        now = time.monotonic()
        with self._lock:
            self.generation_tokens += n
            self._recent.append((now, n))
            self._trim(now)

    def tokens_per_second(self) -> float:
        now = time.monotonic()
        with self._lock:
            self._trim(now)
            return sum(n for _, n in self._recent) / self.WINDOW

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] < now - self.WINDOW:
            self._recent.popleft()

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4, see `CONTENT_TYPE`)."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode("utf-8")


class _Collector:
    """Reads a `ServerMetrics`' plain counters and gauges at scrape time."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m, p = self.metrics, PREFIX
        requests = CounterMetricFamily(
            f"{p}_requests", "HTTP requests by endpoint and status code.", labels=["endpoint", "status"]
        )
        for (endpoint, status), n in sorted(dict(m.requests).items()):
            requests.add_metric([endpoint, str(status)], n)
        yield requests
        finished = CounterMetricFamily(
            f"{p}_sequences_finished", "Generated sequences by finish reason.", labels=["reason"]
        )
        for reason, n in sorted(dict(m.finished).items()):
            finished.add_metric([reason], n)
        yield finished
        yield CounterMetricFamily(f"{p}_prompt_tokens", "Prompt tokens prefilled.", value=m.prompt_tokens)
        yield CounterMetricFamily(f"{p}_generation_tokens", "Tokens generated.", value=m.generation_tokens)
        yield CounterMetricFamily(f"{p}_requests_rejected", "Requests refused with 429 (queue full).", value=m.rejected)
        yield GaugeMetricFamily(f"{p}_queue_depth", "Sequences waiting for a slot.", value=m.queue_depth)
        yield GaugeMetricFamily(f"{p}_running_sequences", "Sequences in the running batch.", value=m.running)
        yield GaugeMetricFamily(
            f"{p}_slots_total", "KV cache slots (most sequences decoded together).", value=m.slots_total
        )
        yield GaugeMetricFamily(
            f"{p}_generation_tokens_per_second",
            f"Tokens generated per second over the last {m.WINDOW:g} s.",
            value=round(m.tokens_per_second(), 3),
        )
