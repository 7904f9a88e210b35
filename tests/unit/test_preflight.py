"""Before kopf starts: the Kubernetes version is checked (refused below 1.30, named in the log),
and the verification Jobs' image is the operator's own, read from its pod."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.unit.fakes import FakeKube
from tritonop.k8s import KubeError
from tritonop.preflight import (
    MIN_KUBERNETES,
    UnsupportedKubernetes,
    check_kubernetes_version,
    container_image,
    kubernetes_version,
    preflight,
)
from tritonop.settings import DEFAULT_VERIFIER_IMAGE, Settings

MIRROR = "registry.example/mirror/tritonop:0.1.0"


def operator_pod(*containers: tuple[str, str], name: str = "tritonop-7d9f-abcde") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "tritonop-system"},
        "spec": {"containers": [{"name": n, "image": image} for n, image in containers]},
    }


class Flaky(FakeKube):
    """An API server whose reads fail with `errors` first (then answer as FakeKube)."""

    def __init__(self, *pods: dict[str, Any], errors: list[Exception]) -> None:
        super().__init__(*pods)
        self.errors = errors
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    async def server_version(self) -> dict[str, Any]:
        self._maybe_fail()
        return await super().server_version()

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        self._maybe_fail()
        return await super().get(kind, namespace, name)


slept: list[float] = []


async def no_sleep(seconds: float) -> None:
    slept.append(seconds)


@pytest.fixture(autouse=True)
def _clear_slept() -> None:
    slept.clear()


# -- the Kubernetes version ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("info", "parsed"),
    [
        ({"major": "1", "minor": "37", "gitVersion": "v1.37.2"}, (1, 37)),
        ({"major": "1", "minor": "30+", "gitVersion": "v1.30.4-eks-a737599"}, (1, 30)),  # EKS, GKE
        ({"major": "", "minor": "", "gitVersion": "v1.29.4+k3s1"}, (1, 29)),  # only gitVersion says it
        ({"gitVersion": "1.31.0"}, (1, 31)),
        ({"major": "1", "minor": "", "gitVersion": "v0.0.0-master+$Format:%H$"}, (0, 0)),  # a dev build
        ({"platform": "linux/amd64"}, None),
        ({}, None),
    ],
)
def test_the_version_is_read_from_major_minor_else_git_version(
    info: dict[str, str], parsed: tuple[int, int] | None
) -> None:
    assert kubernetes_version(info) == parsed


@pytest.mark.parametrize(("minor", "git"), [("30", "v1.30.0"), ("30+", "v1.30.4-gke.1014001"), ("37", "v1.37.2")])
def test_1_30_and_later_start(minor: str, git: str, caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube()
    kube.version = {"major": "1", "minor": minor, "gitVersion": git}
    caplog.set_level(logging.INFO, "tritonop.preflight")
    assert asyncio.run(check_kubernetes_version(kube)) == (1, int(minor.rstrip("+")))
    assert f"Kubernetes {git} (1.30 or later is needed)" in caplog.text


@pytest.mark.parametrize(("minor", "git"), [("29", "v1.29.4"), ("28+", "v1.28.15-eks-7f9249a"), ("", "v1.25.0")])
def test_older_than_1_30_is_refused_naming_both_versions(minor: str, git: str) -> None:
    kube = FakeKube()
    kube.version = {"major": "1", "minor": minor, "gitVersion": git}
    with pytest.raises(UnsupportedKubernetes) as refused:
        asyncio.run(check_kubernetes_version(kube))
    message = str(refused.value)
    assert message.startswith(f"Kubernetes {git} found, tritonop needs 1.30 or later: ")
    assert "preStop sleep action" in message and "tritonop does not start" in message
    assert MIN_KUBERNETES == (1, 30)


def test_an_unreadable_version_is_retried_then_not_checked(caplog: pytest.LogCaptureFixture) -> None:
    kube = Flaky(errors=[KubeError(503, "ServiceUnavailable", "etcd")] * 3)
    assert asyncio.run(check_kubernetes_version(kube, no_sleep)) is None
    assert kube.calls == 3 and slept == [1.0, 2.0]
    assert "cannot read the API server's /version" in caplog.text and "not checked" in caplog.text

    recovering = Flaky(errors=[ConnectionResetError("reset")])
    assert asyncio.run(check_kubernetes_version(recovering, no_sleep)) == (1, 37)


def test_a_forbidden_version_is_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    kube = Flaky(errors=[KubeError(403, "Forbidden", "no")])
    assert asyncio.run(check_kubernetes_version(kube, no_sleep)) is None
    assert kube.calls == 1 and not slept


def test_an_unparsable_version_warns_and_starts(caplog: pytest.LogCaptureFixture) -> None:
    kube = FakeKube()
    kube.version = {"gitVersion": "custom-build"}
    assert asyncio.run(check_kubernetes_version(kube)) is None
    assert "cannot tell the Kubernetes version" in caplog.text and "custom-build" in caplog.text


def test_the_operator_refuses_to_start_on_an_old_cluster(tmp_path: Path) -> None:
    """`tritonop run` against an API server that says 1.29: one error line, exit 1, kopf never starts."""
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    async def main() -> subprocess.CompletedProcess[str]:
        app = web.Application()

        async def version(_: web.Request) -> web.Response:
            return web.json_response({"major": "1", "minor": "29", "gitVersion": "v1.29.4"})

        app.router.add_get("/version", version)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: c, cluster: {{server: '{str(server.make_url('')).rstrip('/')}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        )
        try:
            return await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "tritonop", "run", "--kubeconfig", str(kubeconfig), "--metrics-port=0"],
                capture_output=True,
                text=True,
                timeout=60,
                env={k: v for k, v in os.environ.items() if not k.startswith(("POD_", "KUBERNETES_"))},
            )
        finally:
            await server.close()

    result = asyncio.run(main())
    assert result.returncode == 1, result.stderr
    assert "ERROR tritonop Kubernetes v1.29.4 found, tritonop needs 1.30 or later" in result.stderr
    assert "kopf" not in result.stderr, "kopf must not have started"


# -- the verification Jobs' image ------------------------------------------------------------------
def test_the_operator_container_is_found_among_sidecars() -> None:
    assert container_image(operator_pod(("istio-proxy", "istio/proxyv2"), ("operator", MIRROR))) == MIRROR
    assert container_image(operator_pod(("manager", MIRROR))) == MIRROR  # the only container, renamed
    assert container_image(operator_pod(("a", "x"), ("b", "y"))) is None


def test_in_a_pod_the_verifier_is_the_pods_own_image() -> None:
    pod = operator_pod(("operator", MIRROR))
    settings = asyncio.run(preflight(FakeKube(pod), Settings(), ("tritonop-system", "tritonop-7d9f-abcde")))
    assert settings.verifier_image == MIRROR
    assert settings.verifier_image != DEFAULT_VERIFIER_IMAGE


def test_an_explicit_verifier_image_wins() -> None:
    pod = operator_pod(("operator", MIRROR))
    chosen = Settings(verifier_image="registry.example/verifier:1")
    settings = asyncio.run(
        preflight(FakeKube(pod), chosen, ("tritonop-system", "tritonop-7d9f-abcde"), verifier_image_given=True)
    )
    assert settings.verifier_image == "registry.example/verifier:1"


def test_out_of_a_pod_the_default_image_stays() -> None:
    assert asyncio.run(preflight(FakeKube(), Settings(), None)).verifier_image == DEFAULT_VERIFIER_IMAGE


@pytest.mark.parametrize(
    ("kube", "warning"),
    [
        (FakeKube(), "this operator's pod tritonop-system/tritonop-7d9f-abcde was not found"),
        (Flaky(errors=[KubeError(403, "Forbidden", "cannot get pods")]), "Forbidden"),
        (FakeKube(operator_pod(("a", "x"), ("b", "y"))), "has no container 'operator' (it has a, b)"),
    ],
    ids=["no-pod", "forbidden", "no-operator-container"],
)
def test_when_the_pod_cannot_tell_the_default_stays_with_a_warning(
    kube: FakeKube, warning: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings = asyncio.run(preflight(kube, Settings(), ("tritonop-system", "tritonop-7d9f-abcde"), sleep=no_sleep))
    assert settings.verifier_image == DEFAULT_VERIFIER_IMAGE
    assert warning in caplog.text
    assert f"verification Jobs run {DEFAULT_VERIFIER_IMAGE}" in caplog.text and "--verifier-image" in caplog.text


def test_an_old_cluster_stops_preflight_before_the_image() -> None:
    kube = FakeKube(operator_pod(("operator", MIRROR)))
    kube.version = {"major": "1", "minor": "29", "gitVersion": "v1.29.0"}
    with pytest.raises(UnsupportedKubernetes):
        asyncio.run(preflight(kube, Settings(), ("tritonop-system", "tritonop-7d9f-abcde")))
