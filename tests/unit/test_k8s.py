"""KubeClient's credentials: renewed before they expire, reloaded once after a 401.

The credentials come from the real kubeconfig loader running a real exec plugin (a small script
that hands out token-1, token-2, ... and counts its runs). The API server is aiohttp's test
server, not a real one, because these tests need what a real API server cannot give on demand:
to reject a given token at a chosen moment, to see exactly which token each request carried, and
to run without the dev cluster. tests/integration/test_credentials.py does the same against the
real API server, revoking a real ServiceAccount token.
"""

from __future__ import annotations

import asyncio
import functools
import json
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import kopf
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import REGISTRY

from tritonop import k8s
from tritonop.k8s import KubeClient, KubeError, resource_version

PLUGIN = """\
import datetime, json, pathlib, sys
state = pathlib.Path(sys.argv[1])
runs = state / "runs"
count = int(runs.read_text()) + 1 if runs.exists() else 1
runs.write_text(str(count))
if (state / "fail").exists():
    sys.exit("the identity provider is unreachable")
status = {"token": f"token-{count}"}
expires_in = state / "expires-in"
if expires_in.exists():
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=int(expires_in.read_text()))
    status["expirationTimestamp"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential", "status": status}))
"""


@dataclass
class FakeApiServer:
    """Answers GET pod with the pod, for the accepted tokens only (401 otherwise)."""

    accepted: set[str] | None = None  # None: every token
    seen: list[str] = field(default_factory=list)

    async def pod(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        self.seen.append(token)
        if self.accepted is not None and token not in self.accepted:
            status = {"kind": "Status", "status": "Failure", "reason": "Unauthorized", "code": 401}
            return web.json_response({**status, "message": "Unauthorized"}, status=401)
        name = request.match_info["name"]
        return web.json_response({"kind": "Pod", "metadata": {"name": name, "resourceVersion": "7"}})

    async def version(self, request: web.Request) -> web.Response:
        self.seen.append(request.headers.get("Authorization", "").removeprefix("Bearer "))
        return web.json_response({"major": "1", "minor": "30+", "gitVersion": "v1.30.4-eks-a737599"})


@dataclass
class Plugin:
    state: Path

    @property
    def runs(self) -> int:
        path = self.state / "runs"
        return int(path.read_text()) if path.exists() else 0

    def expire_in(self, seconds: int) -> None:
        (self.state / "expires-in").write_text(str(seconds))


def exec_kubeconfig(tmp_path: Path, server: str) -> tuple[Path, Plugin]:
    state = tmp_path / "plugin"
    state.mkdir()
    script = tmp_path / "plugin.py"
    script.write_text(PLUGIN)
    exec_config = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "command": sys.executable,
        "args": [str(script), str(state)],
        "interactiveMode": "Never",
    }
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "plugin", "user": {"exec": exec_config}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "plugin"}}],
        "current-context": "fake",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(config))
    return path, Plugin(state)


Scenario = Callable[[FakeApiServer, Path, Plugin], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, expires_in: int | None = None) -> None:
    async def main() -> None:
        fake = FakeApiServer()
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods/{name}", fake.pod)
        app.router.add_get("/version", fake.version)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            kubeconfig, plugin = exec_kubeconfig(tmp_path, str(server.make_url("")).rstrip("/"))
            if expires_in is not None:
                plugin.expire_in(expires_in)
            await scenario(fake, kubeconfig, plugin)
        finally:
            await server.close()

    asyncio.run(main())


@asynccontextmanager
async def client(kubeconfig: Path, refresh_period: float | None = None) -> AsyncIterator[KubeClient]:
    """The operator's client (from_environment), or one that asks the loader every refresh_period."""
    if refresh_period is None:
        kube = KubeClient.from_environment(str(kubeconfig))
    else:
        loader = functools.partial(k8s.load_credentials, str(kubeconfig))  # what from_environment passes
        kube = KubeClient(loader(), loader=loader, refresh_period=refresh_period)
    try:
        yield kube
    finally:
        await kube.close()


def responses(code: int) -> float:
    labels = {"verb": "get", "resource": "pods", "code": str(code)}
    return REGISTRY.get_sample_value("tritonop_kubernetes_requests_total", labels) or 0.0


def test_a_401_reloads_the_credentials_once_and_retries(tmp_path: Path) -> None:
    async def scenario(fake: FakeApiServer, kubeconfig: Path, plugin: Plugin) -> None:
        async with client(kubeconfig) as kube:
            assert plugin.runs == 1 and kube.credentials.token == "Bearer token-1"
            fake.accepted = {"token-2"}  # token-1 is revoked
            before = responses(401), responses(200)
            pod = await kube.get("Pod", "ns", "p")
            assert pod is not None and pod["metadata"]["name"] == "p"
            assert fake.seen == ["token-1", "token-2"]
            assert plugin.runs == 2  # re-run although its token had no expiry
            assert kube.requests == {"get": 1}  # one call, however many attempts
            assert (responses(401), responses(200)) == (before[0] + 1, before[1] + 1)  # every answer, by code

            await kube.get("Pod", "ns", "q")  # the new token is kept
            assert fake.seen[-1] == "token-2" and plugin.runs == 2

    run(tmp_path, scenario)


def test_a_second_401_is_an_error(tmp_path: Path) -> None:
    async def scenario(fake: FakeApiServer, kubeconfig: Path, plugin: Plugin) -> None:
        async with client(kubeconfig) as kube:
            fake.accepted = set()  # no token works
            with pytest.raises(KubeError) as raised:
                await kube.get("Pod", "ns", "p")
            assert raised.value.status == 401
            assert fake.seen == ["token-1", "token-2"] and plugin.runs == 2  # one reload, one retry

    run(tmp_path, scenario)


def test_concurrent_401s_share_one_reload(tmp_path: Path) -> None:
    async def scenario(fake: FakeApiServer, kubeconfig: Path, plugin: Plugin) -> None:
        async with client(kubeconfig) as kube:
            fake.accepted = {"token-2"}
            pods = await asyncio.gather(*(kube.get("Pod", "ns", f"p{i}") for i in range(8)))
            assert all(pod is not None for pod in pods)
            assert plugin.runs == 2
            assert fake.seen.count("token-2") == 8

    run(tmp_path, scenario)


def test_a_token_near_its_expiry_is_renewed_before_it_expires(tmp_path: Path) -> None:
    async def scenario(fake: FakeApiServer, kubeconfig: Path, plugin: Plugin) -> None:
        # 4 minutes left: inside the kubernetes loader's 5-minute margin, so it asks the plugin again.
        async with client(kubeconfig, refresh_period=0) as kube:
            await kube.get("Pod", "ns", "p")
            await kube.get("Pod", "ns", "p")
            assert fake.seen == ["token-2", "token-3"]  # renewed without ever meeting a 401
            assert plugin.runs == 3

    run(tmp_path, scenario, expires_in=240)


def test_a_token_far_from_its_expiry_is_kept(tmp_path: Path) -> None:
    async def scenario(fake: FakeApiServer, kubeconfig: Path, plugin: Plugin) -> None:
        async with client(kubeconfig, refresh_period=0) as kube:
            await kube.get("Pod", "ns", "p")
            await kube.get("Pod", "ns", "p")
            assert fake.seen == ["token-1", "token-1"] and plugin.runs == 1

    run(tmp_path, scenario, expires_in=3600)


def test_a_projected_service_account_token_is_re_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(k8s, "TOKEN_FILE_PERIOD", 0.0)
    token_file = tmp_path / "token"
    token_file.write_text("sa-1\n")

    async def scenario(fake: FakeApiServer, kubeconfig: Path, plugin: Plugin) -> None:
        server = k8s.load_credentials(str(kubeconfig)).server
        creds = k8s.Credentials(server, ssl.create_default_context(), "Bearer sa-1", str(token_file))
        kube = KubeClient(creds)
        try:
            await kube.get("Pod", "ns", "p")
            token_file.write_text("sa-2\n")  # kubelet rotated it
            await kube.get("Pod", "ns", "p")
        finally:
            await kube.close()
        assert fake.seen == ["sa-1", "sa-2"]

    run(tmp_path, scenario)


def test_kopf_logs_in_with_a_fresh_credential_each_time(tmp_path: Path) -> None:
    kubeconfig, plugin = exec_kubeconfig(tmp_path, "https://127.0.0.1:6443")
    first, second = k8s.kopf_login(str(kubeconfig)), k8s.kopf_login(str(kubeconfig))
    assert (first.server, first.scheme, first.token) == ("https://127.0.0.1:6443", "Bearer", "token-1")
    assert second.token == "token-2" and plugin.runs == 2  # kopf asks again after a 401: a new token

    (plugin.state / "fail").touch()  # the plugin fails: kopf retries soon instead of going anonymous
    with pytest.raises(kopf.TemporaryError):
        k8s.kopf_login(str(kubeconfig))
    with pytest.raises(kopf.PermanentError):  # no kubeconfig at all: the operator stops, saying why
        k8s.kopf_login(str(tmp_path / "absent"))


def test_resource_version_is_a_number_or_none() -> None:
    assert resource_version({"metadata": {"resourceVersion": "42"}}) == 42
    assert resource_version({"metadata": {"resourceVersion": "opaque-1"}}) is None
    assert resource_version({"metadata": {}}) is None
    assert resource_version({}) is None
    assert resource_version(None) is None


def test_server_version_reads_slash_version(tmp_path: Path) -> None:
    """GET /version (what preflight checks), with the same credentials, counted as resource "version"."""

    async def scenario(fake: FakeApiServer, kubeconfig: Path, plugin: Plugin) -> None:
        labels = {"verb": "get", "resource": "version", "code": "200"}
        before = REGISTRY.get_sample_value("tritonop_kubernetes_requests_total", labels) or 0.0
        async with client(kubeconfig) as kube:
            assert await kube.server_version() == {"major": "1", "minor": "30+", "gitVersion": "v1.30.4-eks-a737599"}
        assert fake.seen == ["token-1"]
        assert REGISTRY.get_sample_value("tritonop_kubernetes_requests_total", labels) == before + 1
        assert k8s.resource_of("/version") == "version"
        assert k8s.resource_of("/api/v1/namespaces/n/pods/p/status") == "pods/status"

    run(tmp_path, scenario)
