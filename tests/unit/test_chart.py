"""The Helm chart (charts/tritonop): its copies of the CRD and of manifests/monitoring/ are
byte-identical to the originals, `helm lint` passes, `helm template` with default values renders
the kustomize install object for object, values reach the Deployment, and values.schema.json
refuses bad values naming them. Runs the real helm, built by `make helm`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import tritonop
from devcluster import versions
from devcluster.cluster import DEFAULT_CACHE_DIR, kubectl_binary
from tests.unit.test_manifests import verifier_image_of

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tritonop"
CRD_NAME = "modeldeployments.tritonop.dev.yaml"
# The labels Helm charts put on every object and the kustomize install has no reason to: the
# only fields allowed to differ between the two installs (stripped before comparing; the
# selector label app.kubernetes.io/name is not among them and is compared like everything else).
HELM_LABELS = frozenset(
    {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance", "app.kubernetes.io/version"}
)


def helm_binary() -> Path:
    cache = Path(os.environ.get("TRITONOP_CACHE") or DEFAULT_CACHE_DIR)
    binary = cache / "bin" / f"helm-{versions.HELM}" / "helm"
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: `make helm` builds it from the Go module proxy")
    return binary


def helm(*args: str, check: bool = True, kubeconfig: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the project's helm, with its config, cache and data under the cache dir (never ~/.config)."""
    binary = helm_binary()
    home = binary.parent / "home"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run([str(binary), *args], capture_output=True, text=True, env=env, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


def documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(*args: str, release: str = "tritonop") -> list[dict[str, Any]]:
    """`helm template` of the chart: the parsed objects, CRD included."""
    return documents(helm("template", release, str(CHART), "--include-crds", *args).stdout)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def without_helm_labels(obj: dict[str, Any]) -> dict[str, Any]:
    """A copy without Helm's standard labels, on the object and on a pod template."""
    obj = json.loads(json.dumps(obj))
    holders = [obj["metadata"]]
    if isinstance(obj.get("spec"), dict) and "template" in obj["spec"]:
        holders.append(obj["spec"]["template"]["metadata"])
    for metadata in holders:
        labels = {k: v for k, v in metadata.get("labels", {}).items() if k not in HELM_LABELS}
        if labels:
            metadata["labels"] = labels
        else:
            metadata.pop("labels", None)
    return obj


def sort_key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def normalized(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted((without_helm_labels(obj) for obj in objects), key=sort_key)


def operator_args(objects: list[dict[str, Any]]) -> list[str]:
    (deployment,) = by_kind(objects, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return list(container["args"])


# -- copies that must not drift ------------------------------------------------------------------
def test_chart_crd_is_byte_identical_to_the_generated_crd() -> None:
    chart_copy = CHART / "crds" / CRD_NAME
    assert sorted(p.name for p in (CHART / "crds").iterdir()) == [CRD_NAME]
    assert chart_copy.read_bytes() == (ROOT / "crds" / CRD_NAME).read_bytes(), "run `make crds`"


def test_chart_monitoring_files_are_byte_identical_to_manifests_monitoring() -> None:
    originals = ROOT / "manifests" / "monitoring"
    copies = CHART / "files" / "monitoring"
    assert sorted(p.name for p in copies.iterdir()) == sorted(p.name for p in originals.iterdir()), "run `make crds`"
    for original in originals.iterdir():
        assert (copies / original.name).read_bytes() == original.read_bytes(), f"{original.name}: run `make crds`"


def test_chart_releases_the_operators_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text())
    assert chart["appVersion"] == tritonop.__version__ == kustomization["images"][0]["newTag"]


# -- helm itself ---------------------------------------------------------------------------------
def test_helm_reports_its_release_version() -> None:
    assert helm("version", "--short").stdout.strip() == versions.HELM  # -ldflags of build_helm


def test_helm_lint(tmp_path: Path) -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout, result.stdout
    everything = tmp_path / "everything.yaml"
    everything.write_text(
        yaml.safe_dump(
            {
                "watchNamespaces": ["team-*", "vision"],
                "logFormat": "json",
                "monitoring": {
                    "podMonitor": {"enabled": True},
                    "serviceMonitor": {"enabled": True},
                    "prometheusRule": {"enabled": True},
                    "grafanaDashboard": {"enabled": True},
                },
            }
        )
    )
    result = helm("lint", "--strict", str(CHART), "-f", str(everything))
    assert "0 chart(s) failed" in result.stdout, result.stdout


# -- the two installs render the same objects -----------------------------------------------------
def test_default_render_is_the_kustomize_install() -> None:
    built = subprocess.run(
        [kubectl_binary(), "kustomize", str(ROOT / "manifests")], capture_output=True, text=True, check=True
    )
    kustomize = sorted(documents(built.stdout), key=sort_key)
    rendered = render()
    for obj in rendered:
        if obj["kind"] != "CustomResourceDefinition":  # crds/ is applied as it is, without labels
            assert set(obj["metadata"]["labels"]) >= HELM_LABELS, obj["metadata"]
    helm_objects = normalized(rendered)
    assert [sort_key(o) for o in helm_objects] == [sort_key(o) for o in kustomize]
    for ours, theirs in zip(helm_objects, kustomize, strict=True):
        assert ours == theirs, f"{'/'.join(sort_key(ours))} differs from the kustomize install"


def test_monitoring_render_is_manifests_monitoring() -> None:
    rendered = render(
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true,"
        "monitoring.prometheusRule.enabled=true,monitoring.grafanaDashboard.enabled=true",
    )
    monitoring = ROOT / "manifests" / "monitoring"
    expected = documents((monitoring / "podmonitor.yaml").read_text())
    expected += documents((monitoring / "prometheusrule.yaml").read_text())
    kinds = {"PodMonitor", "ServiceMonitor", "PrometheusRule"}
    assert normalized([o for o in rendered if o["kind"] in kinds]) == sorted(expected, key=sort_key)
    (dashboard,) = by_kind(rendered, "ConfigMap")
    assert dashboard["data"] == {"tritonop.json": (monitoring / "grafana-dashboard.json").read_text()}
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {o["kind"] for o in render()}.isdisjoint(kinds | {"ConfigMap"}), "monitoring is off by default"


def test_release_name_and_namespace_move_every_object() -> None:
    objects = render("--set", "namespace.name=ml-serving", release="ops")
    namespaced = [o for o in objects if o["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding"}]
    namespaced = [o for o in namespaced if o["kind"] != "CustomResourceDefinition"]
    assert {o["metadata"]["namespace"] for o in namespaced} == {"ml-serving"}
    assert [o["metadata"]["name"] for o in by_kind(objects, "Namespace")] == ["ml-serving"]
    names = {f"{o['kind']}/{o['metadata']['name']}" for o in objects if o["kind"] != "CustomResourceDefinition"}
    assert names == {
        "Namespace/ml-serving",
        "ServiceAccount/ops-tritonop",
        "ClusterRole/ops-tritonop",
        "ClusterRoleBinding/ops-tritonop",
        "Role/ops-tritonop-leader-election",
        "RoleBinding/ops-tritonop-leader-election",
        "Deployment/ops-tritonop",
        "Service/ops-tritonop-metrics",
    }
    (binding,) = by_kind(objects, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == "ops-tritonop"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "ops-tritonop", "namespace": "ml-serving"}]
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == "ops-tritonop"
    assert not by_kind(render("--set", "namespace.create=false"), "Namespace")


# -- values reach the Deployment ------------------------------------------------------------------
def test_default_args_are_the_kustomize_installs() -> None:
    assert operator_args(render()) == [
        "run",
        "--all-namespaces",
        "--leader-elect",
        "--metrics-port=8080",
        "--liveness-port=8081",
    ]


def test_values_become_operator_flags(tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "image": {"repository": "registry.example/mirror/tritonop", "tag": "0.1.0", "pullPolicy": "Always"},
                "replicas": 3,
                "watchNamespaces": ["team-*", "vision"],
                "leaderElection": {"leaseName": "ops-leader", "leaseDuration": 8, "renewDeadline": 6, "retryPeriod": 1},
                "logFormat": "json",
                "verbose": True,
                "metrics": {"port": 9090},
                "livenessPort": 9091,
                "workers": 4,
                "resyncSeconds": 10,
                "relistSeconds": 120,
                "autoscalePeriodSeconds": 0.5,
                "autoscaleReportSeconds": 2,
                "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": None},  # null drops a default
                "nodeSelector": {"kubernetes.io/os": "linux"},
            }
        )
    )
    objects = render("-f", str(values))
    assert operator_args(objects) == [
        "run",
        "--namespace=team-*",
        "--namespace=vision",
        "--leader-elect",
        "--leader-election-id=ops-leader",
        "--lease-duration=8",
        "--renew-deadline=6",
        "--retry-period=1",
        "--metrics-port=9090",
        "--liveness-port=9091",
        "--log-format=json",
        "--verbose",
        "--workers=4",
        "--autoscale-period-seconds=0.5",
        "--autoscale-report-seconds=2",
        "--relist-seconds=120",
        "--resync-seconds=10",
    ]
    (deployment,) = by_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert deployment["spec"]["replicas"] == 3
    assert container["image"] == "registry.example/mirror/tritonop:0.1.0"
    # No --verifier-image: verification Jobs run the operator's own image, read from its pod.
    assert verifier_image_of(deployment) == "registry.example/mirror/tritonop:0.1.0"
    assert container["imagePullPolicy"] == "Always"
    assert container["ports"] == [
        {"name": "metrics", "containerPort": 9090},
        {"name": "liveness", "containerPort": 9091},
    ]
    assert container["resources"] == {"requests": {"cpu": "1", "memory": "1Gi"}}
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    (service,) = by_kind(objects, "Service")
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics"}]


def test_the_flags_are_the_operators(tmp_path: Path) -> None:
    """Every flag the chart can pass is one `tritonop run` parses to the value set."""
    from tritonop.cli import build_parser

    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "watchNamespaces": ["a"],
                "leaderElection": {"leaseName": "x", "leaseDuration": 8, "renewDeadline": 6, "retryPeriod": 1},
                "logFormat": "json",
                "verbose": True,
                "verifierImage": "v:1",
                "workers": 4,
                "resyncSeconds": 10,
                "relistSeconds": 120,
                "autoscalePeriodSeconds": 0.5,
                "autoscaleReportSeconds": 2,
            }
        )
    )
    args = build_parser().parse_args(operator_args(render("-f", str(values))))
    assert (args.namespace, args.leader_elect, args.leader_election_id) == (["a"], True, "x")
    assert (args.lease_duration, args.renew_deadline, args.retry_period) == (8, 6, 1)
    assert (args.log_format, args.verbose, args.verifier_image, args.workers) == ("json", True, "v:1", 4)
    assert (args.resync_seconds, args.relist_seconds) == (10, 120)
    assert (args.autoscale_period_seconds, args.autoscale_report_seconds) == (0.5, 2)


def test_the_verifier_image_is_the_operators_unless_set() -> None:
    (default,) = by_kind(render(), "Deployment")
    assert verifier_image_of(default) == "ghcr.io/tritonop/tritonop:0.1.0"
    (pinned,) = by_kind(render("--set", "image.tag=0.1.0-rc1"), "Deployment")
    assert verifier_image_of(pinned) == "ghcr.io/tritonop/tritonop:0.1.0-rc1"
    (chosen,) = by_kind(render("--set", "image.tag=0.1.0-rc1,verifierImage=registry.example/v:2"), "Deployment")
    assert "--verifier-image=registry.example/v:2" in operator_args([chosen])
    assert verifier_image_of(chosen) == "registry.example/v:2"


def test_the_chart_needs_kubernetes_1_30() -> None:
    """Chart.yaml's kubeVersion: Helm refuses an older cluster before installing anything."""
    assert helm("template", "tritonop", str(CHART), "--kube-version", "1.30.0").returncode == 0
    assert helm("template", "tritonop", str(CHART), "--kube-version", "v1.30.4-eks-a737599").returncode == 0
    old = helm("template", "tritonop", str(CHART), "--kube-version", "1.29.9", check=False)
    assert old.returncode != 0
    assert "chart requires kubeVersion: >=1.30.0-0 which is incompatible with Kubernetes v1.29.9" in old.stderr


def test_one_process_without_leader_election() -> None:
    objects = render("--set", "leaderElection.enabled=false,replicas=1")
    assert "--leader-elect" not in operator_args(objects)
    (deployment,) = by_kind(objects, "Deployment")
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "never two processes at once"
    assert not by_kind(objects, "Role") and not by_kind(objects, "RoleBinding"), "no Lease, no Lease rights"


# -- bad values are refused, naming the value ---------------------------------------------------
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("replicas=-1", "at '/replicas': minimum: got -1, want 0"),
        ("replicas=two", "at '/replicas': got string, want integer"),
        ("logFormat=xml", "at '/logFormat': value must be one of 'text', 'json'"),
        ("image.tag=5", "at '/image/tag': got number, want string"),
        ("image.pullPolicy=Sometimes", "at '/image/pullPolicy'"),
        ("metrics.port=70000", "at '/metrics/port': maximum"),
        ("watchNamespaces={Team}", "at '/watchNamespaces/0'"),
        ("namespace.name=Not_A_Name", "at '/namespace/name'"),
        ("leaderElection.leaseDuration=0", "at '/leaderElection/leaseDuration'"),
        ("resources.requests.cpu=lots", "at '/resources/requests/cpu'"),
        ("monitoring.podMonitor.enabled=yes", "at '/monitoring/podMonitor/enabled'"),
        ("replica=3", "additional properties 'replica' not allowed"),
        ("leaderElection.enabled=false", "replicas: 2 needs leaderElection.enabled: true"),
        ("leaderElection.leaseDuration=5", "got leaderElection.retryPeriod 2, renewDeadline 10, leaseDuration 5"),
        ("livenessPort=8080", "metrics.port and livenessPort must differ"),
    ],
)
def test_bad_values_are_refused_naming_the_value(setting: str, message: str) -> None:
    result = helm("template", "tritonop", str(CHART), "--set", setting, check=False)
    assert result.returncode != 0 and message in result.stderr, result.stderr
