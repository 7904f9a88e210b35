"""The only module that calls the Kubernetes API (kopf's own watching aside).

A small asyncio client on aiohttp: GET/LIST, server-side apply under one field manager, merge
patches of status, deletes and Events. Credentials come from the same places kubectl looks
(in-cluster ServiceAccount, else KUBECONFIG), resolved by the kubernetes package's loaders.
Every request is counted by verb and resource, so idle write calls can be measured.
"""

from __future__ import annotations

import asyncio
import builtins
import datetime
import hashlib
import json
import logging
import ssl
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from prometheus_client import Counter as PromCounter

from tritonop import __version__

FIELD_MANAGER = "tritonop"
USER_AGENT = f"tritonop/{__version__}"
LOG = logging.getLogger("tritonop.k8s")
API_REQUESTS = PromCounter(
    "tritonop_kubernetes_requests_total",
    "Requests the operator made to the Kubernetes API.",
    ["verb", "resource", "code"],
)
WRITE_VERBS = frozenset({"apply", "patch", "create", "delete", "update"})

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


def resource_of(path: str) -> str:
    """The plural (and subresource) a resource_path names: /apis/g/v/namespaces/n/plural/name/sub."""
    parts = path.split("/")[3:] if path.startswith("/api/") else path.split("/")[4:]
    if len(parts) >= 2 and parts[0] == "namespaces":
        parts = parts[2:]
    return "/".join(parts[:1] + parts[2:3])


@dataclass
class Credentials:
    server: str
    ssl_context: ssl.SSLContext
    token: str | None
    token_file: str | None


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    configuration = kube_client.Configuration()
    token_file: str | None = None
    try:
        kube_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        token_file = kube_config.incluster_config.SERVICE_TOKEN_FILENAME
    except kube_config.ConfigException:
        kube_config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)  # type: ignore[no-untyped-call]
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
    if not configuration.verify_ssl:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file)
    token = configuration.api_key.get("authorization") or configuration.api_key.get("BearerToken")
    if token and not token.lower().startswith("bearer "):
        token = f"Bearer {token}"
    return Credentials(server=configuration.host.rstrip("/"), ssl_context=context, token=token, token_file=token_file)


class KubeClient:
    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.session: aiohttp.ClientSession | None = None
        self.requests: Counter[str] = Counter()
        self._token_read_at = time.monotonic()

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None) -> KubeClient:
        return cls(load_credentials(kubeconfig))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
            self.session = None

    @property
    def write_requests(self) -> int:
        return sum(count for verb, count in self.requests.items() if verb in WRITE_VERBS)

    def _headers(self) -> dict[str, str]:
        creds = self.credentials
        # Projected ServiceAccount tokens rotate: re-read the file every minute.
        if creds.token_file and time.monotonic() - self._token_read_at > 60:
            with open(creds.token_file) as handle:
                creds.token = f"Bearer {handle.read().strip()}"
            self._token_read_at = time.monotonic()
        return {"Authorization": creds.token} if creds.token else {}

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
        headers = {**self._headers(), "Accept": "application/json", "User-Agent": USER_AGENT}
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        self.requests[verb] += 1
        for attempt in range(5):
            async with self.session.request(method, url, data=data, headers=headers) as response:
                API_REQUESTS.labels(verb, resource_of(path), str(response.status)).inc()
                text = await response.text()
                if response.status == 429 and attempt < 4:  # API priority & fairness asks us to wait
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                    continue
                if response.status >= 400:
                    try:
                        status = json.loads(text)
                        raise KubeError(response.status, status.get("reason", ""), status.get("message", text))
                    except ValueError:
                        raise KubeError(response.status, response.reason or "", text) from None
                return json.loads(text) if text else None
        raise AssertionError("unreachable")

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
        try:
            version: int | None = int(result.get("metadata", {}).get("resourceVersion", ""))
        except ValueError:
            version = None
        return list(result.get("items", [])), version

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
        meta = involved["metadata"]
        namespace = meta["namespace"]
        digest = hashlib.sha256(f"{meta['uid']}/{event_type}/{reason}/{message}".encode()).hexdigest()[:12]
        name = f"{meta['name']}.{digest}"
        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = message[:1024]
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
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
            "message": message,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
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
