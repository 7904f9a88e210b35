"""Pure: which Triton release a server image is, and whether the operator turns on Triton's
first-response histogram for it.

Triton core exports `nv_inference_first_response_histogram_ms` (the time to a decoupled model's
first response, i.e. its time to first token) from release 24.11 (core 2.52) on, and only with
`--metrics-config=histogram_latencies=true`. The operator adds that flag when a ModelDeployment
states token-level objectives (`spec.autoscaling.tokenLatency`) and its server image is one of
NVIDIA's `tritonserver` images tagged 24.11 or later (`25.10-py3`, `25.10-vllm-python-py3`,
`24.12-trtllm-python-py3`, ...). It adds nothing when:

- the user's `spec.server.extraArgs` already set `histogram_latencies` (to true or false);
- the tag names an earlier release (the family does not exist there);
- the release cannot be told from the image reference (another image name, a tag that is not
  `YY.MM[-variant]`, a digest without a tag). Such a user adds the flag to `extraArgs`; the
  LatencyWithinTarget message says so when no TTFT is measured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tritonop.api.spec import ModelDeployment

# The first release whose core (2.52) exports the first-response histogram.
FIRST_RESPONSE_HISTOGRAM_SINCE = (24, 11)
HISTOGRAM_LATENCIES_KEY = "histogram_latencies"
HISTOGRAM_LATENCIES_FLAG = f"--metrics-config={HISTOGRAM_LATENCIES_KEY}=true"
TRITON_IMAGE_NAME = "tritonserver"
# NGC's tags: YY.MM, then an optional variant (-py3, -vllm-python-py3, -trtllm-python-py3, -py3-sdk).
_RELEASE_TAG = re.compile(r"^(\d{2})\.(\d{2})(?:-[A-Za-z0-9_.-]*)?$")
# tritonserver's long options that start with "metrics-": getopt_long takes any unambiguous
# abbreviation, and "metrics-c" is the shortest that only --metrics-config has.
_METRICS_CONFIG = "metrics-config"
_METRICS_CONFIG_SHORTEST = len("metrics-c")


def triton_release(image: str) -> tuple[int, int] | None:
    """(year, month) of an NGC `tritonserver` image from its tag, e.g. (25, 10) for
    `nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3` or a mirror's `.../tritonserver:25.10-py3`;
    None when the reference does not say (another image name, another tag, a digest only)."""
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    name, tag = last.split(":", 1)
    match = _RELEASE_TAG.match(tag)
    if name != TRITON_IMAGE_NAME or match is None:
        return None
    year, month = int(match.group(1)), int(match.group(2))
    return (year, month) if 1 <= month <= 12 else None


def metrics_config_keys(args: list[str]) -> set[str]:
    """The keys the tritonserver arguments set with --metrics-config (`--metrics-config=k=v`, or
    `--metrics-config` then `k=v`, or an abbreviation such as `--metrics-conf=k=v`)."""
    keys: set[str] = set()
    for index, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        name, has_value, value = arg[2:].partition("=")
        if len(name) < _METRICS_CONFIG_SHORTEST or not _METRICS_CONFIG.startswith(name):
            continue
        if not has_value:
            value = args[index + 1] if index + 1 < len(args) else ""
        keys.add(value.split("=", 1)[0].strip())
    return keys


@dataclass(frozen=True)
class FirstResponseHistogram:
    """Whether the operator adds HISTOGRAM_LATENCIES_FLAG, and why (said in status)."""

    add_flag: bool
    why: str


def first_response_histogram(md: ModelDeployment) -> FirstResponseHistogram:
    image = md.spec.server.image
    autoscaling = md.spec.autoscaling
    if autoscaling is None or autoscaling.token_latency is None:
        return FirstResponseHistogram(False, "no spec.autoscaling.tokenLatency")
    if HISTOGRAM_LATENCIES_KEY in metrics_config_keys(md.spec.server.extra_args):
        return FirstResponseHistogram(False, f"spec.server.extraArgs sets {HISTOGRAM_LATENCIES_KEY}")
    release = triton_release(image)
    since = "{:02d}.{:02d}".format(*FIRST_RESPONSE_HISTOGRAM_SINCE)
    if release is None:
        return FirstResponseHistogram(
            False,
            f"the operator cannot tell the Triton release from the image {image} (it reads NGC's "
            f"{TRITON_IMAGE_NAME}:YY.MM-... tags): if it is {since} or later, add {HISTOGRAM_LATENCIES_FLAG} "
            "to spec.server.extraArgs",
        )
    tag = "{:02d}.{:02d}".format(*release)
    if release < FIRST_RESPONSE_HISTOGRAM_SINCE:
        return FirstResponseHistogram(False, f"the image is Triton {tag}, before {since}")
    return FirstResponseHistogram(True, f"the operator sets {HISTOGRAM_LATENCIES_FLAG} (image release {tag})")
