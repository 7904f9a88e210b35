"""Reading a process's Prometheus metrics (the operator's, a benchmark's)."""

from __future__ import annotations

import urllib.request


def scrape_metrics(port: int) -> dict[str, float]:
    """A process's Prometheus metrics on 127.0.0.1:port, `name{labels}` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    return values
