"""Prometheus text-format metrics for the reward server, without a client library.

The server runs on one event loop, so plain counters need no locks; a lock is still taken so
that a metrics scrape from another thread (tests, embedding) reads a consistent snapshot.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict

# Seconds. Reward requests range from tens of milliseconds (cache hits, tiny judges) to minutes
# (a big batch on a busy GPU); RL clients commonly time out at 120-300 s.
LATENCY_BUCKETS: tuple[float, ...] = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

PREFIX = "rationalrewards"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    if not pairs:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1


class ServerMetrics:
    """Counters, gauges and latency histograms of a reward server.

    Exposed series (all prefixed ``rationalrewards_``):

    * ``http_requests_total{endpoint,status}``: every answered request, by HTTP status;
    * ``request_failures_total{endpoint,kind}``: rejected requests (``auth``, ``too_large``,
      ``too_many_items``, ``too_many_images``, ``image_too_large``, ``too_many_pixels``, ``busy``,
      ``bad_json``, ``unsupported_media_type``, ``invalid``, ``server_error``);
    * ``items_total{endpoint}`` and ``item_failures_total{endpoint,kind}`` (``input``, ``parse``,
      ``backend``): judged items and the ones whose critique failed;
    * ``request_latency_seconds{endpoint}``: histogram of request wall time;
    * ``judge_latency_seconds``: histogram of the backend's per-item latency;
    * ``completion_tokens_total``: decode tokens the judge reported;
    * ``images_decoded_total`` / ``decoded_pixels_total``: images the server read (pixels as
      declared by their headers), so a test or an operator can see what decoding cost;
    * ``decoding_pixels``: gauge of the server-wide decode budget in use;
    * ``decode_waiting_requests``: gauge of requests waiting for that budget;
    * ``in_flight_requests`` / ``in_flight_items``: gauges;
    * ``uptime_seconds``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.requests: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.request_failures: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.items: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.item_failures: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
        self.latency: dict[tuple[tuple[str, str], ...], _Histogram] = {}
        self.judge_latency = _Histogram(LATENCY_BUCKETS)
        self.completion_tokens = 0
        self.in_flight_requests = 0
        self.in_flight_items = 0
        self.images_decoded = 0
        self.decoded_pixels = 0
        self.decoding_pixels = 0
        self.decode_waiting = 0

    # -- recording ----------------------------------------------------------------------------
    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(("endpoint", endpoint), ("status", str(status)))] += 1
            key = (("endpoint", endpoint),)
            hist = self.latency.get(key)
            if hist is None:
                hist = self.latency[key] = _Histogram(LATENCY_BUCKETS)
            hist.observe(seconds)

    def request_failed(self, endpoint: str, kind: str) -> None:
        with self._lock:
            self.request_failures[(("endpoint", endpoint), ("kind", kind))] += 1

    def item_done(self, endpoint: str, ok: bool, kind: str | None, latency_s: float | None,
                  completion_tokens: int) -> None:
        with self._lock:
            self.items[(("endpoint", endpoint),)] += 1
            if not ok:
                self.item_failures[(("endpoint", endpoint), ("kind", kind or "backend"))] += 1
            if latency_s:
                self.judge_latency.observe(latency_s)
            self.completion_tokens += completion_tokens

    def image_decoded(self, pixels: int) -> None:
        """Called from decode threads, hence the lock."""
        with self._lock:
            self.images_decoded += 1
            self.decoded_pixels += pixels

    def request_failure_count(self, kind: str) -> int:
        """Rejected requests of one kind over all endpoints: handy in tests."""
        with self._lock:
            return sum(v for k, v in self.request_failures.items() if dict(k).get("kind") == kind)

    def count_failures(self, kind: str | None = None) -> int:
        """Item failures (optionally of one kind) over all endpoints: handy in tests."""
        with self._lock:
            return sum(v for k, v in self.item_failures.items() if kind is None or dict(k).get("kind") == kind)

    # -- exposition ---------------------------------------------------------------------------
    def render(self) -> str:
        """The Prometheus text exposition format (version 0.0.4)."""
        p = PREFIX
        lines: list[str] = []
        with self._lock:
            def counter(name: str, help_: str, series: dict[tuple[tuple[str, str], ...], int]) -> None:
                lines.append(f"# HELP {p}_{name} {help_}")
                lines.append(f"# TYPE {p}_{name} counter")
                for labels, value in sorted(series.items()):
                    lines.append(f"{p}_{name}{_labels(labels)} {value}")

            def histogram(name: str, help_: str, series: dict[tuple[tuple[str, str], ...], _Histogram]) -> None:
                lines.append(f"# HELP {p}_{name} {help_}")
                lines.append(f"# TYPE {p}_{name} histogram")
                for labels, hist in sorted(series.items()):
                    for bound, count in zip(hist.buckets, hist.counts, strict=True):
                        lines.append(f"{p}_{name}_bucket{_labels((*labels, ('le', _fmt(bound))))} {count}")
                    lines.append(f"{p}_{name}_bucket{_labels((*labels, ('le', '+Inf')))} {hist.total}")
                    lines.append(f"{p}_{name}_sum{_labels(labels)} {hist.sum!r}")
                    lines.append(f"{p}_{name}_count{_labels(labels)} {hist.total}")

            def gauge(name: str, help_: str, value: float) -> None:
                lines.append(f"# HELP {p}_{name} {help_}")
                lines.append(f"# TYPE {p}_{name} gauge")
                lines.append(f"{p}_{name} {_fmt(value)}")

            counter("http_requests_total", "HTTP requests answered, by endpoint and status.", self.requests)
            counter("request_failures_total", "Requests rejected before judging, by kind.", self.request_failures)
            counter("items_total", "Items judged.", self.items)
            counter("item_failures_total", "Items whose critique failed, by kind (input, parse, backend).",
                    self.item_failures)
            histogram("request_latency_seconds", "Wall time of reward/compare requests.", self.latency)
            histogram("judge_latency_seconds", "Backend latency per judged item.",
                      {(): self.judge_latency} if self.judge_latency.total else {})
            lines.append(f"# HELP {p}_completion_tokens_total Decode tokens reported by the judge.")
            lines.append(f"# TYPE {p}_completion_tokens_total counter")
            lines.append(f"{p}_completion_tokens_total {self.completion_tokens}")
            for name, help_, value in (
                ("images_decoded_total", "Images read by the server.", self.images_decoded),
                ("decoded_pixels_total", "Pixels of the images read (as their headers declare).", self.decoded_pixels),
            ):
                lines.append(f"# HELP {p}_{name} {help_}")
                lines.append(f"# TYPE {p}_{name} counter")
                lines.append(f"{p}_{name} {value}")
            gauge("decoding_pixels", "Pixels of the server-wide decode budget in use.", self.decoding_pixels)
            gauge("decode_waiting_requests", "Requests waiting for the decode budget.", self.decode_waiting)
            gauge("in_flight_requests", "Requests being judged now.", self.in_flight_requests)
            gauge("in_flight_items", "Items being judged now.", self.in_flight_items)
            gauge("uptime_seconds", "Seconds since the server started.", round(time.monotonic() - self.started, 3))
        return "\n".join(lines) + "\n"
