"""The operator's metrics-page reader against prometheus_client's parser, on a real Triton page."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tritonop.autoscale.metrics import parse_sample
from tritonop.canary.counters import parse_version_counters
from tritonop.promtext import samples

# Scraped from Triton 2.51 (nvidia-pytriton 0.7.0) serving sleepy on the dev cluster.
PAGE = (Path(__file__).parent / "data" / "triton_2_51_metrics.txt").read_text()
NAMES = (
    "nv_inference_request_success",
    "nv_inference_request_failure",
    "nv_inference_request_duration_us",
    "nv_inference_queue_duration_us",
    "nv_inference_compute_infer_duration_us",
    "nv_inference_exec_count",
    "nv_inference_pending_request_count",
    "nv_inference_request_summary_us",
    "nv_cpu_utilization",
)


def busy_page(seed: int) -> str:
    """The real page with every value made non-trivial, and a second model and version."""
    rng = random.Random(seed)
    lines = []
    for line in PAGE.splitlines():
        if line.startswith("nv_") and not line.endswith(("Nan", "NaN")):
            line = f"{line.rsplit(' ', 1)[0]} {rng.randint(0, 10**9)}"
        lines.append(line)
        if line.startswith("nv_inference") and 'model="sleepy",version="1"' in line:
            lines.append(line.replace('version="1"', 'version="2"').replace("sleepy", "other", rng.randint(0, 1)))
    return "\n".join(lines) + "\n"


def reference(text: str) -> list[tuple[str, dict[str, str], float]]:
    found = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if name in NAMES:
                found.append((name, dict(sample.labels), sample.value))
    return found


def same(a: list[tuple[str, dict[str, str], float]], b: list[tuple[str, dict[str, str], float]]) -> bool:
    def key(item: tuple[str, dict[str, str], float]) -> tuple[str, tuple[tuple[str, str], ...], str]:
        name, labels, value = item
        return name, tuple(sorted(labels.items())), "nan" if math.isnan(value) else repr(float(value))

    return sorted(map(key, a)) == sorted(map(key, b))


@pytest.mark.parametrize("seed", [None, 1, 2, 3])
def test_the_same_samples_as_prometheus_clients_parser(seed: int | None) -> None:
    text = PAGE if seed is None else busy_page(seed)
    mine = list(samples(text, NAMES))
    assert len(mine) >= 16  # every series of NAMES the page has (busy pages add a second model or version)
    assert same(mine, reference(text))


def test_the_autoscaler_and_canary_readings_of_a_busy_page() -> None:
    text = busy_page(7)
    expected: dict[str, float] = {}
    p95 = None
    for name, labels, value in reference(text):
        if labels.get("model") != "sleepy":
            continue
        if name == "nv_inference_request_summary_us":
            if labels.get("quantile") == "0.95" and not math.isnan(value):
                p95 = max(p95 or 0.0, value)
        else:
            expected[name] = expected.get(name, 0.0) + value
    sample = parse_sample(text, "sleepy", at=1.0)
    assert sample.success == expected["nv_inference_request_success"]
    assert sample.executions == expected["nv_inference_exec_count"]
    assert sample.pending == expected["nv_inference_pending_request_count"]
    assert sample.p95_us == p95
    counters = parse_version_counters(text, "sleepy")
    assert set(counters) <= {1, 2} and 1 in counters
    version_one = [
        v for n, labels, v in reference(text) if n == "nv_inference_request_failure" and labels["version"] == "1"
    ]
    assert counters[1].failure == sum(v for v in version_one if True)


def test_escapes_timestamps_totals_and_bare_names() -> None:
    text = "\n".join(
        [
            "# TYPE a counter",
            'a_total{model="we\\"ird\\\\name",version="1"} 3 1700000000000',
            "a 4",
            "ab 5",  # a longer name with a wanted prefix
            'b{model="x"} +Inf',
            'b{model="x"} -Inf',
        ]
    )
    assert list(samples(text, ["a", "b"])) == [
        ("a", {"model": 'we"ird\\name', "version": "1"}, 3.0),
        ("a", {}, 4.0),
        ("b", {"model": "x"}, math.inf),
        ("b", {"model": "x"}, -math.inf),
    ]
    with pytest.raises(ValueError, match="malformed"):
        list(samples('a{model="x"}', ["a"]))
