"""What `tritonop run` checks and learns from the API server before kopf starts.

- The Kubernetes version (the API server's /version). Below MIN_KUBERNETES the operator refuses to
  start: the API server would refuse every Triton Deployment it renders (the native preStop sleep
  action), so nothing could ever serve, and one clear log line at start-up says why better than an
  ApplyRefused on every ModelDeployment. A version that cannot be read or parsed is not a reason
  to stop: a warning says it was not checked.
- The operator's own image, when it runs in a pod (POD_NAMESPACE and POD_NAME from the downward
  API) and no --verifier-image was given: the verification Jobs run that image, so a mirrored or
  re-tagged operator image (kustomize `images:`, Helm `image.*`, `kubectl set image`) is what they
  pull too. The downward API cannot expose an image, so the pod is read from the API server.
  If that fails (no pod, no permission), the default image stays and a warning says so.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import Any, TypeVar

import aiohttp

from tritonop.k8s import KubeApi, KubeError
from tritonop.settings import Settings

LOG = logging.getLogger("tritonop.preflight")
MIN_KUBERNETES = (1, 30)
WHY_MIN_KUBERNETES = (
    "the Triton pods use the native preStop sleep action (on by default from Kubernetes 1.30), "
    "which older API servers refuse in a Deployment"
)
OPERATOR_CONTAINER = "operator"  # the container's name in manifests/operator.yaml and the chart
ATTEMPTS = 3  # reads tried before giving up (network errors, 5xx, 429)
T = TypeVar("T")


class UnsupportedKubernetes(Exception):
    """The API server is older than MIN_KUBERNETES."""


def kubernetes_version(info: Mapping[str, Any]) -> tuple[int, int] | None:
    """(major, minor) from the API server's /version, or None when it does not say. Managed
    clusters decorate it ("minor": "30+", "gitVersion": "v1.30.4-eks-a737599"): the leading digits
    of major and minor count, else those of gitVersion."""
    major = re.match(r"\d+", str(info.get("major", "")))
    minor = re.match(r"\d+", str(info.get("minor", "")))
    if major and minor:
        return int(major.group()), int(minor.group())
    git = re.match(r"v?(\d+)\.(\d+)", str(info.get("gitVersion", "")))
    return (int(git.group(1)), int(git.group(2))) if git else None


def _transient(error: Exception) -> bool:
    if isinstance(error, KubeError):
        return error.status >= 500 or error.status == 429
    return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | OSError)


async def _read(call: Callable[[], Awaitable[T]], sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> T:
    """call(), tried again after a transient failure (1 s, then 2 s); the last error is raised."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return await call()
        except Exception as error:
            if attempt == ATTEMPTS or not _transient(error):
                raise
            await sleep(float(attempt))
    raise AssertionError("unreachable")


async def check_kubernetes_version(
    kube: KubeApi, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> tuple[int, int] | None:
    """The server's (major, minor), after refusing one below MIN_KUBERNETES (UnsupportedKubernetes);
    None (and a warning) when it cannot be read or parsed."""
    minimum = "{}.{}".format(*MIN_KUBERNETES)
    try:
        info = await _read(kube.server_version, sleep)
    except Exception as error:
        LOG.warning(
            "cannot read the API server's /version (%s): Kubernetes %s or later is needed, not checked", error, minimum
        )
        return None
    found = kubernetes_version(info)
    shown = str(info.get("gitVersion") or f"{info.get('major')}.{info.get('minor')}")
    if found is None:
        LOG.warning(
            "cannot tell the Kubernetes version from the API server's /version (%s): %s or later is needed,"
            " not checked",
            shown,
            minimum,
        )
        return None
    if found < MIN_KUBERNETES:
        raise UnsupportedKubernetes(
            f"Kubernetes {shown} found, tritonop needs {minimum} or later: {WHY_MIN_KUBERNETES}; "
            "upgrade the cluster (tritonop does not start)"
        )
    LOG.info("Kubernetes %s (%s or later is needed)", shown, minimum)
    return found


def container_image(pod: Mapping[str, Any], name: str = OPERATOR_CONTAINER) -> str | None:
    """The image of the pod's container `name`, or of its only container; None if neither."""
    containers = pod.get("spec", {}).get("containers", [])
    named = [c for c in containers if c.get("name") == name] or (containers if len(containers) == 1 else [])
    image = named[0].get("image") if named else None
    return str(image) if image else None


async def own_image(
    kube: KubeApi, namespace: str, name: str, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
) -> str | None:
    """The image this process runs from, read from its own pod; None (and a warning) if unknown."""
    try:
        pod = await _read(lambda: kube.get("Pod", namespace, name), sleep)
    except Exception as error:
        LOG.warning("cannot read this operator's pod %s/%s (%s)", namespace, name, error)
        return None
    if pod is None:
        LOG.warning("this operator's pod %s/%s was not found (POD_NAMESPACE, POD_NAME)", namespace, name)
        return None
    image = container_image(pod)
    if image is None:
        names = ", ".join(c.get("name", "?") for c in pod.get("spec", {}).get("containers", []))
        LOG.warning("pod %s/%s has no container %r (it has %s)", namespace, name, OPERATOR_CONTAINER, names)
    return image


async def preflight(
    kube: KubeApi,
    settings: Settings,
    pod: tuple[str, str] | None = None,
    verifier_image_given: bool = False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> Settings:
    """Check the Kubernetes version (UnsupportedKubernetes below the minimum) and return the
    settings with the verification Jobs' image: --verifier-image when given, else this pod's own
    image (pod: its namespace and name), else the default."""
    await check_kubernetes_version(kube, sleep)
    if verifier_image_given:
        LOG.info("verification Jobs run %s (--verifier-image)", settings.verifier_image)
        return settings
    image = await own_image(kube, *pod, sleep=sleep) if pod is not None else None
    if image is None:
        where = "not in a pod" if pod is None else "this pod's image is unknown"
        LOG.log(
            logging.INFO if pod is None else logging.WARNING,
            "verification Jobs run %s (%s; set --verifier-image to change it)",
            settings.verifier_image,
            where,
        )
        return settings
    LOG.info("verification Jobs run %s (this operator's own image)", image)
    return replace(settings, verifier_image=image)
