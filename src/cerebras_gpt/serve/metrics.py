"""The server's counters and histograms, written out in the Prometheus text format for `GET /metrics`.

Small on purpose (no prometheus_client dependency): counters of requests, tokens and finished
sequences, gauges of the queue and the running batch, histograms of time to first token and request
latency, and generated tokens per second over the last 10 seconds. Names follow vLLM's
(`vllm:time_to_first_token_seconds`, ...) with our prefix, so existing dashboards map over.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict, deque

PREFIX = "cerebras_gpt"


class Histogram:
    """Cumulative buckets, sum and count (Prometheus histogram semantics)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last is +Inf
        self.sum = 0.0
        self.count = 0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self.counts[bisect.bisect_left(self.buckets, value)] += 1
            self.sum += value
            self.count += 1

    def lines(self, name: str) -> list[str]:
        out, running = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts):
            running += n
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'{name}_bucket{{le="{le}"}} {running}')
        out += [f"{name}_sum {self.sum}", f"{name}_count {self.count}"]
        return out


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
        self.ttft = Histogram((0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
        self.latency = Histogram((0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0))
        self._recent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

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
        """The Prometheus text exposition (format 0.0.4)."""
        p = PREFIX
        lines = [f"# HELP {p}_requests_total HTTP requests by endpoint and status code.",
                 f"# TYPE {p}_requests_total counter"]
        for (endpoint, status), n in sorted(self.requests.items()):
            lines.append(f'{p}_requests_total{{endpoint="{endpoint}",status="{status}"}} {n}')
        lines += [f"# HELP {p}_sequences_finished_total Generated sequences by finish reason.",
                  f"# TYPE {p}_sequences_finished_total counter"]
        for reason, n in sorted(self.finished.items()):
            lines.append(f'{p}_sequences_finished_total{{reason="{reason}"}} {n}')
        scalars = [
            ("prompt_tokens_total", "counter", "Prompt tokens prefilled.", self.prompt_tokens),
            ("generation_tokens_total", "counter", "Tokens generated.", self.generation_tokens),
            ("requests_rejected_total", "counter", "Requests refused with 429 (queue full).", self.rejected),
            ("queue_depth", "gauge", "Sequences waiting for a slot.", self.queue_depth),
            ("running_sequences", "gauge", "Sequences in the running batch.", self.running),
            ("slots_total", "gauge", "KV cache slots (most sequences decoded together).", self.slots_total),
            ("generation_tokens_per_second", "gauge", f"Tokens generated per second over the last "
             f"{self.WINDOW:g} s.", round(self.tokens_per_second(), 3)),
        ]
        for name, kind, help_, value in scalars:
            lines += [f"# HELP {p}_{name} {help_}", f"# TYPE {p}_{name} {kind}", f"{p}_{name} {value}"]
        for name, help_, hist in (("time_to_first_token_seconds", "From arrival to the first token.", self.ttft),
                                  ("request_duration_seconds", "From arrival to the last token.", self.latency)):
            lines += [f"# HELP {p}_{name} {help_}", f"# TYPE {p}_{name} histogram", *hist.lines(f"{p}_{name}")]
        return "\n".join(lines) + "\n"
