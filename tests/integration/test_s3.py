"""Serving from S3-compatible storage with an endpoint (on-prem MinIO/Ceph RGW): a real MinIO
server (built by `make minio` from the Go module proxy) holds the model repository; Triton
downloads from it with the credentials Secret, and a verification Job checks each version's
manifest in the bucket, with the same Secret, before anything loads."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from devcluster.cluster import DevCluster, wait_until
from devcluster.minio import MinioServer, minio_binary, start_minio
from devcluster.volumes import host_path_claim
from loadgen import LoadGenerator
from tests.integration.conftest import OperatorProcess
from tests.integration.helpers import (
    MODEL_REPO,
    apply_md,
    events_for,
    get_md,
    infer_version,
    md_condition,
    md_pods,
    ready_ips,
    sleepy_spec,
    wait_for_condition,
)
from tritonop.repository import tools

pytestmark = pytest.mark.integration
ACCESS_KEY, SECRET_KEY = "tritonop-test", "tritonop-test-secret"
BUCKET = "models"


@pytest.fixture(scope="module")
def minio(cluster: DevCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    binary = minio_binary(cluster.cache_dir)
    assert binary.exists(), f"{binary} missing: `make minio` builds it (make test does)"
    server = start_minio(binary, tmp_path_factory.mktemp("minio-data"), ACCESS_KEY, SECRET_KEY, BUCKET)
    yield server
    server.stop()  # the server must not outlive the session


def upload(server: MinioServer, local: Path, prefix: str) -> None:
    s3 = server.client()
    for path in sorted(local.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            s3.fput_object(BUCKET, f"{prefix}/{path.relative_to(local)}", str(path))


def credentials_secret(core: client.CoreV1Api, namespace: str, secret_key: str = SECRET_KEY) -> None:
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="minio"),
            string_data={
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_DEFAULT_REGION": "us-east-1",
            },
        ),
    )


def test_serve_switch_and_verify_from_s3_with_an_endpoint(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    minio: MinioServer,
    tmp_path: Path,
) -> None:
    """Versions 2 and 3 have manifests and serve Verified; 3 replaces 2 in place under load with
    0 failed requests; 4 was tampered with after its manifest was written, so it never loads
    and 3 keeps serving; 5 lists a file that is not in the bucket."""
    local = tmp_path / "repo"
    shutil.copytree(MODEL_REPO / "sleepy", local / "sleepy")
    for version in (4, 5):
        shutil.copytree(MODEL_REPO / "sleepy" / "3", local / "sleepy" / str(version))
    for version in (2, 3, 4, 5):
        tools.write_manifest(local / "sleepy" / str(version))
    tampered = local / "sleepy" / "4" / "model.py"
    tampered.write_text(tampered.read_text() + "\n# changed after the manifest was written\n")
    (local / "sleepy" / "5" / "model.py").unlink()
    prefix = f"{namespace}/repo"
    upload(minio, local, prefix)
    credentials_secret(core, namespace)
    uri = f"s3://http://{minio.endpoint}/{BUCKET}/{prefix}"

    spec = sleepy_spec(replicas=2)
    spec["model"].update({"repository": uri, "credentialsSecret": "minio", "version": 2})
    apply_md(cluster, namespace, "sleepy", spec)
    md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=180)
    integrity = md["status"]["integrity"]
    assert (integrity["result"], integrity["repository"]) == ("Verified", uri), integrity
    assert integrity["checkedBy"].startswith("job/sleepy-verify-2-")
    assert md_condition(md, "RepositoryValid")["reason"] == "Verified"
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {2}
    pods = {
        pod.metadata.uid: pod.status.container_statuses[0].restart_count for pod in md_pods(core, namespace, "sleepy")
    }

    with LoadGenerator(lambda: ready_ips(core, namespace, "sleepy"), "sleepy", 10, max_seconds=300) as load:
        wait_until("load flowing", lambda: load.stats.sent >= 20, timeout=30)
        spec["model"]["version"] = 3
        apply_md(cluster, namespace, "sleepy", spec)
        wait_until(
            "every replica on version 3, verified",
            lambda: (
                get_md(api, namespace, "sleepy")["status"].get("activeVersion") == 3
                and md_condition(get_md(api, namespace, "sleepy"), "Ready").get("status") == "True"
            ),
            timeout=180,
        )
        after = load.stats.sent
        wait_until("more requests after the switch", lambda: load.stats.sent >= after + 20, timeout=30)
    assert load.stats.failed == 0, load.stats.errors
    assert load.stats.versions[2] > 0 and load.stats.versions[3] > 0
    current = {p.metadata.uid: p.status.container_statuses[0].restart_count for p in md_pods(core, namespace, "sleepy")}
    assert current == pods, "pods were replaced or restarted"
    md = get_md(api, namespace, "sleepy")
    assert md["status"]["integrity"]["result"] == "Verified" and md["status"]["integrity"]["version"] == 3

    started = time.monotonic()
    spec["model"]["version"] = 4
    apply_md(cluster, namespace, "sleepy", spec)
    md = wait_for_condition(api, namespace, "sleepy", "RepositoryValid", "False", "ChecksumMismatch", 120)
    print(f"\ntampered S3 object refused in {time.monotonic() - started:.1f}s")
    assert f"{uri}/sleepy/4/model.py: sha256" in md_condition(md, "RepositoryValid")["message"]
    assert md_condition(md, "ModelLoaded")["reason"] == "BlockedByRepository"
    assert md["status"]["activeVersion"] == 3
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}
    warnings = [e for e in events_for(core, namespace, "sleepy") if e.type == "Warning"]
    assert any(e.reason == "ChecksumMismatch" and "4/model.py" in e.message for e in warnings), warnings

    spec["model"]["version"] = 5
    apply_md(cluster, namespace, "sleepy", spec)
    wait_until(
        "version 5 refused: a listed object is missing",
        lambda: (
            f"{uri}/sleepy/5/model.py: listed in SHA256SUMS.json but missing"
            in md_condition(get_md(api, namespace, "sleepy"), "RepositoryValid")["message"]
        ),
        120,
    )
    assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {3}


def test_refused_s3_credentials_are_reported_and_nothing_loads(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    minio: MinioServer,
    tmp_path: Path,
) -> None:
    """A Secret with a wrong key: the verification Job cannot list the bucket, and says so."""
    upload(minio, MODEL_REPO, f"{namespace}/repo")
    credentials_secret(core, namespace, secret_key="not-the-key")
    spec = sleepy_spec(replicas=1)
    spec["model"].update(
        {"repository": f"s3://http://{minio.endpoint}/{BUCKET}/{namespace}/repo", "credentialsSecret": "minio"}
    )
    apply_md(cluster, namespace, "sleepy", spec)
    md = wait_for_condition(api, namespace, "sleepy", "RepositoryValid", "False", "RepositoryUnreadable", 120)
    message = md_condition(md, "RepositoryValid")["message"]
    assert "cannot list" in message and "SignatureDoesNotMatch" in message, message
    assert md_condition(md, "ModelLoaded")["status"] != "True"


def test_node_cache_from_s3_stages_once_per_node_and_evicts_what_no_pod_needs(
    cluster: DevCluster,
    operator: OperatorProcess,
    api: client.ApiClient,
    core: client.CoreV1Api,
    namespace: str,
    minio: MinioServer,
    tmp_path: Path,
) -> None:
    """spec.model.cache over the real MinIO: two pods on one node need one staging Job; switches to
    3 then 4 with a budget for two versions evict 2 (no pod needs it) and never the served one."""
    local = tmp_path / "repo"
    # Not the __pycache__ folders earlier tests' servers left in model_repo: the budget is sized
    # from the files staged.
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(MODEL_REPO / "sleepy", local / "sleepy", ignore=skip)
    shutil.copytree(MODEL_REPO / "sleepy" / "3", local / "sleepy" / "4", ignore=skip)
    for version in (2, 3, 4):
        tools.write_manifest(local / "sleepy" / str(version))
    largest = max(
        sum(f.stat().st_size for f in (local / "sleepy" / str(v)).rglob("*") if f.is_file()) for v in (2, 3, 4)
    )
    prefix = f"{namespace}/cached"
    upload(minio, local, prefix)
    credentials_secret(core, namespace)
    cache = tmp_path / "cache"
    cache.mkdir()
    volume = f"cache-{namespace}"
    cluster.kubectl(
        "apply", "-f", "-", input=yaml.safe_dump_all(host_path_claim(namespace, "model-cache", volume, cache))
    )
    node = "gpu-node-0"
    spec = sleepy_spec(replicas=2, server={"gpus": 0, "nodeSelector": {"kubernetes.io/hostname": node}})
    spec["model"].update(
        {
            "repository": f"s3://http://{minio.endpoint}/{BUCKET}/{prefix}",
            "credentialsSecret": "minio",
            "version": 2,
            "cache": {"claimName": "model-cache", "budget": str(largest * 5 // 2)},  # two versions fit
        }
    )
    try:
        apply_md(cluster, namespace, "sleepy", spec)
        md = wait_for_condition(api, namespace, "sleepy", "Ready", "True", timeout=180)
        assert [(e["node"], e["version"], e["state"]) for e in md["status"]["cache"]] == [(node, 2, "Staged")]
        assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {2}
        stagers = client.BatchV1Api(api).list_namespaced_job(
            namespace, label_selector="app.kubernetes.io/name=model-stager"
        )
        assert len(stagers.items) == 1, [job.metadata.name for job in stagers.items]  # one node, one Job
        for version in (3, 4):
            spec["model"]["version"] = version
            apply_md(cluster, namespace, "sleepy", spec)
            wait_until(
                f"both pods on version {version}",
                lambda v=version: (  # type: ignore[misc]
                    get_md(api, namespace, "sleepy")["status"].get("activeVersion") == v
                    and md_condition(get_md(api, namespace, "sleepy"), "Ready").get("status") == "True"
                ),
                timeout=180,
            )
        staged = sorted(path.name.split("-")[1] for path in (cache / node / "versions").iterdir())
        assert staged == ["3", "4"], staged  # 2 evicted for 4; 3 was served during the switch
        assert {infer_version(ip) for ip in ready_ips(core, namespace, "sleepy")} == {4}
    finally:
        cluster.kubectl("delete", "md", "sleepy", "-n", namespace, "--wait=true", "--timeout=90s", check=False)
        cluster.kubectl("delete", "pvc", "model-cache", "-n", namespace, "--wait=false", check=False)
        cluster.kubectl("delete", "pv", volume, "--wait=false", check=False)
