"""render/triton_release.py: the Triton release of a server image, the --metrics-config keys of
tritonserver arguments, and what status says about the first-response histogram."""

from __future__ import annotations

from typing import Any

import pytest

from tritonop.api.spec import ModelDeployment
from tritonop.render.triton_release import first_response_histogram, metrics_config_keys, triton_release


@pytest.mark.parametrize(
    ("image", "release"),
    [
        ("nvcr.io/nvidia/tritonserver:25.10-py3", (25, 10)),
        ("nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3", (25, 10)),
        ("nvcr.io/nvidia/tritonserver:24.11-trtllm-python-py3", (24, 11)),
        ("nvcr.io/nvidia/tritonserver:24.08-py3-sdk", (24, 8)),
        ("nvcr.io/nvidia/tritonserver:25.01", (25, 1)),
        ("registry.local:5000/mirror/tritonserver:25.10-py3", (25, 10)),  # a mirror keeps NGC's name and tags
        ("nvcr.io/nvidia/tritonserver:25.10-py3@sha256:" + "b" * 64, (25, 10)),
        ("nvcr.io/nvidia/tritonserver@sha256:" + "b" * 64, None),  # a digest alone says no release
        ("nvcr.io/nvidia/tritonserver:latest", None),
        ("nvcr.io/nvidia/tritonserver", None),
        ("nvcr.io/nvidia/tritonserver:25.13-py3", None),  # no 13th month
        ("registry.local/llm/server:25.10-py3", None),  # not NGC's image name: its tag is the user's own
        ("registry.local:5000/tritonserver", None),  # the registry's port is not a tag
    ],
)
def test_release_from_the_image_tag(image: str, release: tuple[int, int] | None) -> None:
    assert triton_release(image) == release


@pytest.mark.parametrize(
    ("args", "keys"),
    [
        ([], set()),
        (["--metrics-config=histogram_latencies=true"], {"histogram_latencies"}),
        (["--metrics-config", "histogram_latencies=false", "--log-verbose=1"], {"histogram_latencies"}),
        (["--metrics-conf=summary_latencies=true"], {"summary_latencies"}),  # getopt_long's abbreviation
        (["--metrics-c=counter_latencies=false"], {"counter_latencies"}),
        (["--metrics-interval-ms=1000", "--metrics-port=9"], set()),  # other metrics-* flags
        (["--metrics=histogram_latencies=true"], set()),  # ambiguous for tritonserver: not this flag
        (["--metrics-config"], {""}),  # a flag without its value sets nothing known
    ],
)
def test_metrics_config_keys(args: list[str], keys: set[str]) -> None:
    assert metrics_config_keys(args) == keys


def md(image: str, extra_args: list[str] | None = None, tokens: bool = True) -> ModelDeployment:
    autoscaling: dict[str, Any] = {"maxReplicas": 4, "targetLatencyMs": 60000}
    if tokens:
        autoscaling["tokenLatency"] = {"timeToFirstTokenMs": 500}
    return ModelDeployment.from_body(
        {
            "metadata": {"name": "llm", "namespace": "ns", "uid": "u", "generation": 1},
            "spec": {
                "model": {"repository": "file:///r"},
                "server": {"image": image, "extraArgs": extra_args or []},
                "autoscaling": autoscaling,
            },
        }
    )


@pytest.mark.parametrize(
    ("spec", "add", "why"),
    [
        (
            md("nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3"),
            True,
            "the operator sets --metrics-config=histogram_latencies=true (image release 25.10)",
        ),
        (md("nvcr.io/nvidia/tritonserver:25.10-py3", tokens=False), False, "no spec.autoscaling.tokenLatency"),
        (
            md("nvcr.io/nvidia/tritonserver:25.10-py3", ["--metrics-config=histogram_latencies=false"]),
            False,
            "spec.server.extraArgs sets histogram_latencies",
        ),
        (md("nvcr.io/nvidia/tritonserver:24.10-py3"), False, "the image is Triton 24.10, before 24.11"),
        (
            md("registry.local/llm:7"),
            False,
            "the operator cannot tell the Triton release from the image registry.local/llm:7 (it reads NGC's "
            "tritonserver:YY.MM-... tags): if it is 24.11 or later, add --metrics-config=histogram_latencies=true "
            "to spec.server.extraArgs",
        ),
    ],
)
def test_whether_the_operator_turns_on_the_first_response_histogram(spec: ModelDeployment, add: bool, why: str) -> None:
    decision = first_response_histogram(spec)
    assert (decision.add_flag, decision.why) == (add, why)
