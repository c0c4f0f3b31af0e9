"""The fake server's ``/metrics``: real counters, printed like metrics-exporter-prometheus 0.12.

Families appear once they have been recorded (docs/wire.md, "Metrics"): counters first, then gauges,
then histograms, each family followed by one empty line. The JSON variant is LoRAX's
``parse_text_to_metrics`` applied to that text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import orjson

from lorax.testing._serde import rust_f64

__all__ = ["Metrics"]


def _duration_buckets() -> list[float]:
    # LoRAX's buckets for every metric whose name ends in "duration": 0.0001 * 1.5^k, k = 1..35,
    # computed by repeated multiplication (the printed digits depend on it).
    out = []
    value = 0.0001
    for _ in range(35):
        value *= 1.5
        out.append(value)
    return out


DURATION_BUCKETS = _duration_buckets()


def _num(value: float) -> str:
    # Rust Display of an f64: integral values without ".0", never an exponent.
    return rust_f64(float(value))


class Metrics:
    """Thread-safe counters, gauges and histograms with LoRAX's metric names."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], int]] = {}
        self._gauges: dict[str, float] = {}
        self._histograms: dict[str, tuple[list[int], float, int]] = {}

    def increment(self, name: str, labels: dict[str, str] | None = None, by: int = 1) -> None:
        """Add to a counter (created on first use)."""
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            family = self._counters.setdefault(name, {})
            family[key] = family.get(key, 0) + by

    def gauge(self, name: str, value: float) -> None:
        """Set a gauge."""
        with self._lock:
            self._gauges[name] = value

    def observe(self, name: str, value: float) -> None:
        """Record a duration (seconds) in a histogram with LoRAX's duration buckets."""
        with self._lock:
            buckets, total, count = self._histograms.get(name, ([0] * len(DURATION_BUCKETS), 0.0, 0))
            for i, bound in enumerate(DURATION_BUCKETS):
                if value <= bound:
                    buckets[i] += 1
            self._histograms[name] = (buckets, total + value, count + 1)

    def counter_value(self, name: str, labels: dict[str, str] | None = None) -> int:
        """The current value of a counter (0 when never recorded)."""
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0)

    def render_prometheus(self) -> str:
        """The Prometheus text exposition."""
        lines: list[str] = []
        with self._lock:
            for name, family in self._counters.items():
                lines.append(f"# TYPE {name} counter")
                for key, value in family.items():
                    lines.append(f"{name}{_labels(key)} {value}")
                lines.append("")
            for name, gauge in self._gauges.items():
                lines.append(f"# TYPE {name} gauge")
                lines.append(f"{name} {_num(gauge)}")
                lines.append("")
            for name, (buckets, total, count) in self._histograms.items():
                lines.append(f"# TYPE {name} histogram")
                for bound, bucket in zip(DURATION_BUCKETS, buckets, strict=True):
                    lines.append(f'{name}_bucket{{le="{rust_f64(bound)}"}} {bucket}')
                lines.append(f'{name}_bucket{{le="+Inf"}} {count}')
                lines.append(f"{name}_sum {_num(total)}")
                lines.append(f"{name}_count {count}")
                lines.append("")
        return "".join(line + "\n" for line in lines)

    def render_json(self) -> bytes:
        """LoRAX's JSON variant, parsed from the text exactly as ``parse_text_to_metrics`` does."""
        families = parse_text_to_metrics(self.render_prometheus().splitlines())
        for family in families.values():
            for point in family["data"]:
                point["value"] = orjson.Fragment(_json_f64(point["value"]))
        return orjson.dumps(families)


def _json_f64(value: float) -> bytes:
    # serde_json prints f64 like orjson (both ryu), except that it writes 1e16, not 1e+16.
    return orjson.dumps(value).replace(b"e+", b"e")


def _labels(key: Iterable[tuple[str, str]]) -> str:
    items = list(key)
    if not items:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in items) + "}"


def parse_text_to_metrics(lines: Iterable[str]) -> dict[str, Any]:
    """``parse_text_to_metrics`` from ``router/src/server.rs``."""
    metrics: dict[str, dict[str, Any]] = {}
    current = ""
    for line in lines:
        if not line:
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                current = parts[2]
                metrics[current] = {"type": parts[3], "data": []}
                continue
        family = metrics.get(current)
        if family is None:
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        name, value_text = parts[0], parts[1]
        try:
            value = float(value_text)
        except ValueError:
            continue
        if "{" in name:
            key = name
        elif name.endswith("_sum"):
            key = "sum"
        elif name.endswith("_count"):
            key = "count"
        else:
            key = ""
        family["data"].append({"key": key, "value": value})
    return metrics
