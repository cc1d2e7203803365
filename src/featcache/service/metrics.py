"""Prometheus text metrics, kept in memory: counters and histograms with labels, thread-safe."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

__all__ = ["Metrics"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)

Labels = tuple[tuple[str, str], ...]


class _Histogram:
    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Counters and histograms rendered in the Prometheus text format (version 0.0.4)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, _Histogram]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}

    def describe(self, name: str, kind: str, text: str) -> None:
        self._help[name] = (kind, text)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._counters[name]
            series[key] = series.get(key, 0.0) + amount

    def observe(
        self, name: str, value: float, buckets: tuple[float, ...] = LATENCY_BUCKETS, **labels: str
    ) -> None:
        key = tuple(sorted(labels.items()))
        with self._lock:
            series = self._histograms[name]
            if key not in series:
                series[key] = _Histogram(buckets)
            series[key].observe(value)

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name, series in sorted(self._counters.items()):
                self._header(lines, name, "counter")
                for key, value in sorted(series.items()):
                    lines.append(f"{name}{_labels(key)} {value:g}")
            for name, hists in sorted(self._histograms.items()):
                self._header(lines, name, "histogram")
                for key, hist in sorted(hists.items()):
                    cumulative = 0
                    for bound, count in zip(hist.buckets, hist.counts, strict=False):
                        cumulative += count
                        lines.append(f"{name}_bucket{_labels(key, le=f'{bound:g}')} {cumulative}")
                    lines.append(f"{name}_bucket{_labels(key, le='+Inf')} {hist.n}")
                    lines.append(f"{name}_sum{_labels(key)} {hist.total:g}")
                    lines.append(f"{name}_count{_labels(key)} {hist.n}")
        return "\n".join(lines) + "\n"

    def _header(self, lines: list[str], name: str, kind: str) -> None:
        text = self._help.get(name, (kind, name))[1]
        lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]


def _labels(key: Labels, **extra: str) -> str:
    pairs = [*key, *extra.items()]
    if not pairs:
        return ""
    body = ",".join(
        f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for k, v in pairs
    )
    return "{" + body + "}"
