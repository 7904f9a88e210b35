"""The only module that calls the Kubernetes API (kopf's own watching aside).

A small asyncio client on aiohttp: GET/LIST, server-side apply under one field manager, merge
patches of status, deletes and Events. Credentials come from the same places kubectl looks
(in-cluster ServiceAccount, else KUBECONFIG), resolved by the kubernetes package's loaders.
Every request is counted by verb and resource, so idle write calls can be measured.

Credentials expire, and the client keeps them current the way client-go does:
- in-cluster, the projected ServiceAccount token file is re-read every minute (kubelet rotates it);
- from a kubeconfig, the loader's `refresh_api_key_hook` is asked every few seconds; it re-runs
  an exec plugin (EKS, GKE, AKS) or refreshes an OIDC/GCP token once the credential is within
  five minutes of its expiry (the exec credential's expirationTimestamp, the JWT's exp);
- a 401 means the credential was revoked or expired early: the client loads credentials afresh
  (re-reads the kubeconfig and re-runs the exec plugin, or re-reads the token file) and retries
  the request once. Concurrent 401s share one reload; a 401 with fresh credentials is an error.
kopf's own watches log in through `kopf_login` (an `@kopf.on.login` handler): the same loader,
asked again by kopf each time one of its requests meets a 401.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import functools
import hashlib
import json
import logging
import ssl
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from prometheus_client import Counter as PromCounter

from tritonop import __version__
from tritonop.clock import rfc3339

if TYPE_CHECKING:
    import kopf

FIELD_MANAGER = "tritonop"
USER_AGENT = f"tritonop/{__version__}"
LOG = logging.getLogger("tritonop.k8s")
API_REQUESTS = PromCounter(
    "tritonop_kubernetes_requests_total",
    "Requests the operator made to the Kubernetes API.",
    ["verb", "resource", "code"],
)
WRITE_VERBS = frozenset({"apply", "patch", "create", "delete", "update"})
TOKEN_FILE_PERIOD = 60.0  # seconds between re-reads of a projected ServiceAccount token
REFRESH_HOOK_PERIOD = 10.0  # seconds between asking the kubeconfig loader whether its token expires

# kind -> (apiVersion, plural, namespaced)
RESOURCES: dict[str, tuple[str, str, bool]] = {
    "Deployment": ("apps/v1", "deployments", True),
    "Service": ("v1", "services", True),
    "Secret": ("v1", "secrets", True),
    "Pod": ("v1", "pods", True),
    "Event": ("v1", "events", True),
    "PodDisruptionBudget": ("policy/v1", "poddisruptionbudgets", True),
    "ModelDeployment": ("tritonop.dev/v1alpha1", "modeldeployments", True),
    "Lease": ("coordination.k8s.io/v1", "leases", True),
    "Job": ("batch/v1", "jobs", True),
    "Node": ("v1", "nodes", False),
}


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def going_away(self) -> bool:
        """The object's namespace is being (or has been) deleted."""
        return (self.status == 403 and "being terminated" in self.message) or (
            self.status == 404 and self.message.startswith("namespaces ")
        )


def resource_path(kind: str, namespace: str | None = None, name: str | None = None, sub: str | None = None) -> str:
    api_version, plural, namespaced = RESOURCES[kind]
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{quote(namespace)}"
    path = f"{base}/{plural}"
    if name:
        path += f"/{quote(name)}"
    if sub:
        path += f"/{sub}"
    return path


def resource_version(obj: Mapping[str, Any] | None) -> int | None:
    """metadata.resourceVersion of an object or a list, as a number; None when absent or not a
    number (the API calls it opaque; etcd-backed servers hand out integers, so they compare)."""
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", ""))
    except (TypeError, ValueError):
        return None


def resource_of(path: str) -> str:
    """The plural (and subresource) a resource_path names: /apis/g/v/namespaces/n/plural/name/sub;
    for a path outside /api and /apis (e.g. /version), the path itself without its slashes."""
    if not path.startswith(("/api/", "/apis/")):
        return path.strip("/")
    parts = path.split("/")[3:] if path.startswith("/api/") else path.split("/")[4:]
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:]
    return "/".join(parts[:1] + parts[2:3])


@dataclass
class Credentials:
    server: str
    ssl_context: ssl.SSLContext
    token: str | None  # the whole Authorization header value ("Bearer ...")
    token_file: str | None  # in-cluster: the projected ServiceAccount token, re-read periodically
    # What the kubernetes package's loader made: its refresh_api_key_hook renews a kubeconfig's
    # exec/OIDC/GCP token; its file paths (CA, client certificate) are what kopf logs in with.
    configuration: kube_client.Configuration | None = None


def _bearer(configuration: kube_client.Configuration) -> str | None:
    token = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    if token and not token.lower().startswith("bearer "):
        token = f"Bearer {token}"
    return str(token) if token else None


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """Resolve credentials now: in-cluster ServiceAccount, else the kubeconfig (running its exec
    plugin, if it has one). Called again after a 401. The kubeconfig is `kubeconfig` (the CLI
    resolves $KUBECONFIG into the settings), else the kubernetes package's default."""
    configuration = kube_client.Configuration()
    token_file: str | None = None
    try:
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        token_file = kube_config.incluster_config.SERVICE_TOKEN_FILENAME
    except kube_config.ConfigException:
        kube_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig, client_configuration=configuration
        )
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    return Credentials(
        server=configuration.host.rstrip("/"),
        ssl_context=context,
        token=_bearer(configuration),
        token_file=token_file,
        configuration=configuration,
    )


def kopf_login(kubeconfig: str | None = None) -> kopf.ConnectionInfo:
    """Credentials for kopf's own watches, resolved like KubeClient's: register it with
    `@kopf.on.login()`. kopf calls it at startup and again whenever one of its requests gets a 401
    (then it closes its session, so every watch reconnects with the new token). Unlike kopf's
    default login it honours an explicit kubeconfig path, whatever $KUBECONFIG said at import."""
    import kopf  # here, not at the top: `tritonop crd` and the tests need no kopf

    try:
        credentials = load_credentials(kubeconfig)
    except (kube_config.ConfigException, OSError, ssl.SSLError) as error:
        raise kopf.PermanentError(f"cannot load Kubernetes credentials: {error}") from error
    configuration = credentials.configuration
    assert configuration is not None
    if credentials.token is None and not configuration.cert_file:
        # An exec plugin that failed (the loader only logs it): try again rather than go anonymous.
        raise kopf.TemporaryError("no Kubernetes credentials yet (see the exec plugin's error above)", delay=1)
    scheme, _, token = (credentials.token or "").partition(" ")
    return kopf.ConnectionInfo(
        server=credentials.server,
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
    )


class PodConditions(Protocol):
    """The call serving makes on the Kubernetes API: a pod's readiness-gate condition."""

    async def patch_pod_condition(
        self, namespace: str, name: str, condition: dict[str, Any]
    ) -> dict[str, Any] | None: ...


class KubeApi(PodConditions, Protocol):
    """Every call the operator makes on the Kubernetes API: what KubeClient offers (unit tests
    give an in-memory fake)."""

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None: ...

    async def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Any]: ...

    async def list_snapshot(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[builtins.list[Any], int | None]: ...

    async def apply(self, obj: dict[str, Any], subresource: str | None = None) -> dict[str, Any]: ...

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]: ...

    async def delete(self, kind: str, namespace: str, name: str) -> None: ...

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...

    async def post_event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str, component: str = "tritonop"
    ) -> None: ...

    async def server_version(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class CredentialKeeper:
    """The credentials a client sends, kept fresh: projected ServiceAccount tokens re-read every
    minute, kubeconfig exec/OIDC tokens renewed before they expire, and everything reloaded once
    after a 401 (for all the requests that failed with the same credentials)."""

    def __init__(
        self, credentials: Credentials, loader: Callable[[], Credentials] | None, refresh_period: float
    ) -> None:
        self.credentials = credentials
        self.loader = loader
        self.refresh_period = refresh_period
        self._next_check = time.monotonic() + (TOKEN_FILE_PERIOD if credentials.token_file else refresh_period)
        self._generation = 0  # bumped at every reload: requests that failed with an older one retry
        self._refreshing = asyncio.Lock()

    async def authorization(self) -> tuple[int, str | None]:
        """The credential generation and the Authorization header value to send now, renewed first
        if it is time to look (a renewal in progress is not waited for: the old token still works)."""
        if time.monotonic() >= self._next_check and not self._refreshing.locked():
            async with self._refreshing:
                if time.monotonic() >= self._next_check:
                    await self._renew()
        return self._generation, self.credentials.token

    async def _renew(self) -> None:
        creds = self.credentials
        if creds.token_file:
            # Projected ServiceAccount tokens rotate: re-read the file every minute.
            self._next_check = time.monotonic() + TOKEN_FILE_PERIOD
            try:
                with open(creds.token_file) as handle:
                    self._use(f"Bearer {handle.read().strip()}")
            except OSError as error:
                LOG.warning("cannot re-read the ServiceAccount token %s: %s", creds.token_file, error)
            return
        self._next_check = time.monotonic() + self.refresh_period
        configuration = creds.configuration
        hook = configuration.refresh_api_key_hook if configuration is not None else None
        if configuration is None or hook is None:
            return  # a static token or a client certificate: nothing expires that a loader renews
        try:
            # Cheap unless the token is within 5 minutes of expiry: then it runs the exec plugin
            # (or refreshes OIDC/GCP), which may take seconds, so off the event loop.
            await asyncio.to_thread(hook, configuration)
        except Exception as error:  # whatever a plugin or provider raises, the old token stays
            LOG.warning("cannot refresh the Kubernetes credentials: %s", error)
            return
        token = _bearer(configuration)
        if token and token != creds.token:
            LOG.info("Kubernetes credentials refreshed before expiry")
            self._use(token)

    def _use(self, token: str) -> None:
        """A renewed token; a request that fails with the previous one retries without a reload."""
        if token != self.credentials.token:
            self.credentials.token = token
            self._generation += 1

    async def reload(self, generation: int) -> bool:
        """After a 401 with credentials of this generation: load them afresh, once for all the
        requests that failed with them. True when there are new credentials to retry with."""
        async with self._refreshing:
            if self._generation != generation:
                return True  # another request reloaded them meanwhile
            if self.loader is None:
                return False
            try:
                fresh = await asyncio.to_thread(self.loader)
            except Exception as error:  # a kubeconfig or exec plugin failing in any way
                LOG.warning("401 from the API server, and the credentials cannot be reloaded: %s", error)
                return False
            if self.credentials.token and not fresh.token:
                # The loaders log a failing exec plugin and carry on without a token: sending
                # none would make every request anonymous (403s), so keep failing with 401s.
                LOG.warning("401 from the API server, and reloading the credentials gave no token")
                return False
            LOG.info("401 from the API server: credentials reloaded")
            # The server and its CA stay: the session's connection pool was built for them.
            self.credentials = dataclasses.replace(
                self.credentials, token=fresh.token, token_file=fresh.token_file, configuration=fresh.configuration
            )
            self._generation += 1
            period = TOKEN_FILE_PERIOD if fresh.token_file else self.refresh_period
            self._next_check = time.monotonic() + period
            return True


class KubeClient:
    def __init__(
        self,
        credentials: Credentials,
        timeout: float = 30.0,
        loader: Callable[[], Credentials] | None = None,
        refresh_period: float = REFRESH_HOOK_PERIOD,
    ) -> None:
        """`loader` resolves credentials afresh (after a 401); without one a 401 is final.
        `refresh_period`: how often the kubeconfig loader is asked whether its token expires."""
        self.keeper = CredentialKeeper(credentials, loader, refresh_period)
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None
        self.requests: Counter[str] = Counter()

    @property
    def credentials(self) -> Credentials:
        return self.keeper.credentials

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeClient:
        return cls(load_credentials(kubeconfig), loader=functools.partial(load_credentials, kubeconfig))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    @property
    def write_requests(self) -> int:
        return sum(count for verb, count in self.requests.items() if verb in WRITE_VERBS)

    async def _request(
        self,
        verb: str,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=self.timeout, connector=aiohttp.TCPConnector(ssl=self.credentials.ssl_context, limit=64)
            )
        if method in ("PATCH", "POST", "PUT"):
            params = {"fieldManager": FIELD_MANAGER, **(params or {})}
        url = self.credentials.server + path + (f"?{urlencode(params)}" if params else "")
        data = None if body is None else json.dumps(body)
        self.requests[verb] += 1
        throttled = 0
        reloaded = False
        while True:
            generation, authorization = await self.keeper.authorization()
            headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
            if authorization:
                headers["Authorization"] = authorization
            if data is not None:
                headers["Content-Type"] = content_type
            async with self.session.request(method, url, data=data, headers=headers) as response:
                status, reason = response.status, response.reason
                retry_after = response.headers.get("Retry-After", "1")
                text = await response.text()
            API_REQUESTS.labels(verb, resource_of(path), str(status)).inc()
            if status == 429 and throttled < 4:  # API priority & fairness asks us to wait
                throttled += 1
                await asyncio.sleep(float(retry_after))
                continue
            if status == 401 and not reloaded:  # revoked or expired early: reload once, retry once
                reloaded = True
                if await self.keeper.reload(generation):
                    continue
            if status >= 400:
                try:
                    answer = json.loads(text)
                except ValueError:
                    raise KubeError(status, reason or "", text) from None
                raise KubeError(status, answer.get("reason", ""), answer.get("message", text))
            return json.loads(text) if text else None

    async def server_version(self) -> dict[str, Any]:
        """The API server's /version: major, minor ("30+" on EKS and GKE), gitVersion, ..."""
        return dict(await self._request("get", "GET", "/version"))

    async def get(self, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return dict(await self._request("get", "GET", resource_path(kind, namespace, name)))
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, kind: str, namespace: str | None = None, label_selector: str | None = None) -> list[Any]:
        items, _ = await self.list_snapshot(kind, namespace, label_selector)
        return items

    async def list_snapshot(
        self, kind: str, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[builtins.list[Any], int | None]:
        """Items and the list's resourceVersion (the point in time it shows), as a number if it is one."""
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self._request("list", "GET", resource_path(kind, namespace), params=params)
        return list(result.get("items", [])), resource_version(result)

    async def apply(self, obj: dict[str, Any], subresource: str | None = None) -> dict[str, Any]:
        """Server-side apply of the fields in obj, owned by the operator's field manager."""
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta.get("namespace"), meta["name"], subresource)
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        return dict(
            await self._request(
                "apply", "PATCH", path, params=params, body=obj, content_type="application/apply-patch+yaml"
            )
        )

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        return dict(await self._request("create", "POST", resource_path(obj["kind"], meta.get("namespace")), body=obj))

    async def replace(self, obj: dict[str, Any]) -> dict[str, Any]:
        """PUT the whole object; its metadata.resourceVersion makes the write conditional (409 if stale)."""
        meta = obj["metadata"]
        path = resource_path(obj["kind"], meta.get("namespace"), meta["name"])
        return dict(await self._request("update", "PUT", path, body=obj))

    async def patch_status(self, kind: str, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        path = resource_path(kind, namespace, name, "status")
        return dict(
            await self._request(
                "patch", "PATCH", path, body={"status": status}, content_type="application/merge-patch+json"
            )
        )

    async def patch_pod_condition(self, namespace: str, name: str, condition: dict[str, Any]) -> dict[str, Any] | None:
        """Set one pod condition (strategic merge on conditions[type]): used for readiness gates.
        Returns the patched pod, or None if it went away meanwhile (nothing to open)."""
        path = resource_path("Pod", namespace, name, "status")
        body = {"status": {"conditions": [condition]}}
        try:
            return dict(
                await self._request(
                    "patch", "PATCH", path, body=body, content_type="application/strategic-merge-patch+json"
                )
            )
        except KubeError as error:
            if error.status != 404:
                raise
            return None

    async def delete(self, kind: str, namespace: str, name: str) -> None:
        try:
            await self._request("delete", "DELETE", resource_path(kind, namespace, name))
        except KubeError as error:
            if error.status != 404:
                raise

    async def post_event(
        self, involved: dict[str, Any], event_type: str, reason: str, message: str, component: str = "tritonop"
    ) -> None:
        """A core/v1 Event; a repeat of the same reason+message bumps its count instead."""
        now = rfc3339()
        event = event_body(involved, event_type, reason, message, component, now)
        namespace, name = event["metadata"]["namespace"], event["metadata"]["name"]
        try:
            await self._request("create", "POST", resource_path("Event", namespace), body=event)
        except KubeError as error:
            if error.status != 409:
                LOG.warning("cannot post event %s: %s", reason, error)
                return
            existing = await self.get("Event", namespace, name)
            count = int((existing or {}).get("count", 1)) + 1
            try:
                await self._request(
                    "patch",
                    "PATCH",
                    resource_path("Event", namespace, name),
                    body={"count": count, "lastTimestamp": now},
                    content_type="application/merge-patch+json",
                )
            except KubeError as patch_error:
                LOG.warning("cannot update event %s: %s", reason, patch_error)


def event_body(
    involved: dict[str, Any], event_type: str, reason: str, message: str, component: str, now: str
) -> dict[str, Any]:
    """A core/v1 Event about `involved`, named after what it says (repeats share the name)."""
    meta = involved["metadata"]
    namespace = meta["namespace"]
    digest = hashlib.sha256(f"{meta['uid']}/{event_type}/{reason}/{message}".encode()).hexdigest()[:12]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{digest}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved["apiVersion"],
            "kind": involved["kind"],
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta["uid"],
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "type": event_type,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
