"""The `tritonop` command line: `tritonop run` starts the operator; `tritonop crd` prints the CRD."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from tritonop import __version__
from tritonop.leader import ElectionConfig
from tritonop.repository.manifests import MANIFEST_NAME
from tritonop.repository.report import RepositoryReport, inspect, inspect_tree
from tritonop.repository.s3 import S3Credentials, S3Path
from tritonop.settings import DEFAULT_VERIFIER_IMAGE, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonop",
        description="Serve NVIDIA Triton model versions on Kubernetes from ModelDeployment resources.",
    )
    parser.add_argument("--version", action="version", version=f"tritonop {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="run the operator (kopf underneath)")
    run.add_argument("--kubeconfig", help="kubeconfig to use (default: in-cluster, then $KUBECONFIG)")
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", default=[], help="watch only this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    run.add_argument(
        "--liveness-port", type=int, default=8081, help="port of /healthz for the liveness probe (0 disables)"
    )
    run.add_argument("--metrics-port", type=int, default=8080, help="Prometheus metrics port (0 disables)")
    run.add_argument("--resync-seconds", type=float, default=30.0, help="periodic reconcile of every object")
    run.add_argument(
        "--relist-seconds", type=float, default=60.0, help="full re-list of owned objects (the cache's safety net)"
    )
    run.add_argument("--workers", type=int, default=16, help="ModelDeployments reconciled in parallel")
    run.add_argument(
        "--verifier-image",
        help="image of the verification Jobs that check model files where the operator cannot read them "
        "(default: the operator's own image, read from its pod (POD_NAMESPACE, POD_NAME) at start-up; out of a "
        f"pod {DEFAULT_VERIFIER_IMAGE})",
    )
    run.add_argument(
        "--autoscale-period-seconds", type=float, default=1.0, help="autoscaler evaluation period per ModelDeployment"
    )
    run.add_argument(
        "--autoscale-report-seconds",
        type=float,
        default=5.0,
        help="how often status gets the autoscaler's measurement (also at once when it scales)",
    )
    election = run.add_argument_group("leader election (several operator processes, one reconciling)")
    election.add_argument(
        "--leader-elect",
        action="store_true",
        help="reconcile only while holding a coordination.k8s.io Lease; other processes stand by, watching",
    )
    election.add_argument(
        "--leader-election-namespace",
        help="namespace of the Lease (default: the pod's own namespace in a cluster, else tritonop-system)",
    )
    election.add_argument("--leader-election-id", default="tritonop-leader", help="name of the Lease")
    election.add_argument(
        "--lease-duration", type=float, default=15.0, help="seconds a standby waits on a quiet leader"
    )
    election.add_argument("--renew-deadline", type=float, default=10.0, help="seconds a leader may fail to renew")
    election.add_argument("--retry-period", type=float, default=2.0, help="seconds between lease attempts")
    run.add_argument("--log-format", choices=["text", "json"], default="text", help="json: one object per line")
    run.add_argument("-v", "--verbose", action="store_true")

    commands.add_parser("crd", help="print the ModelDeployment CRD (generated from the API models)")
    add_repo_commands(commands)
    add_cache_commands(commands)
    return parser


def add_cache_commands(commands: Any) -> None:
    cache = commands.add_parser(
        "cache",
        help="the node-local model cache (what the operator's staging Job runs on a node)",
        description="Copy model versions onto a node's disk, verified, for the Triton pods on that node.",
    )
    sub = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    stage = sub.add_parser(
        "stage",
        help="stage one version into the node's cache folder and link it for its owner",
        description="Copy the version from the repository into CACHE_ROOT (verified against its manifest) unless "
        "an unchanged copy is there, evicting least recently used unpinned versions to stay within the budget, and "
        "link it under CACHE_ROOT/repos/OWNER (Triton's --model-repository). Prints a one-line JSON verdict. Exit 0 "
        "when the pods can load verified bytes (hit, staged, no-room with a scratch copy), 1 otherwise.",
    )
    stage.add_argument("repository", help="a folder, or s3://[http(s)://host:port/]bucket/path (AWS_* credentials)")
    stage.add_argument("model")
    stage.add_argument("--version", type=int, required=True)
    stage.add_argument("--cache-root", type=Path, required=True, help="the node's cache folder")
    stage.add_argument("--owner", required=True, help="NAMESPACE.NAME of the ModelDeployment")
    stage.add_argument("--budget-bytes", type=int, required=True, help="bytes shared entries may use on the node")
    stage.add_argument("--keep", default="", help="comma-separated versions pods on the node still serve")
    stage.add_argument("--verdict-file", type=Path, help="also write the verdict here (e.g. /dev/termination-log)")
    stage.add_argument("--display-root", help="name the repository so in messages (e.g. its pvc:// URI)")
    stage.add_argument(
        "--live-owners",
        help="comma-separated NAMESPACE.NAME of the ModelDeployments that exist: pins of other owners in "
        "--owners-scope written before --owners-listed-at are released (their versions become evictable)",
    )
    stage.add_argument("--owners-scope", default="*", help="the namespace --live-owners covers, or * (every one)")
    stage.add_argument("--owners-listed-at", type=float, default=0.0, help="when --live-owners was listed (epoch s)")


def run_cache(args: argparse.Namespace) -> int:
    """`cache stage`: the verdict on stdout and in --verdict-file; only the runtime deps are needed."""
    from tritonop.cache.stage import Request, stage

    def names(text: str) -> frozenset[str]:
        return frozenset(part.strip() for part in text.split(",") if part.strip())

    request = Request(
        args.repository,
        args.model,
        args.version,
        args.cache_root,
        args.owner,
        args.budget_bytes,
        names(args.keep),
        args.display_root,
        live_owners=None if args.live_owners is None else names(args.live_owners),
        owners_scope=args.owners_scope,
        owners_listed_at=args.owners_listed_at,
    )
    verdict = stage(request, dict(os.environ))  # s3://: the AWS_* credentials (the Secret's, as env)
    text = verdict.to_json()
    if args.verdict_file is not None:
        args.verdict_file.write_text(text)
    print(text)
    return 0 if verdict.ok else 1


def add_repo_commands(commands: Any) -> None:
    repo = commands.add_parser(
        "repo",
        help="manage a Triton model repository (export torch modules, list, validate, show configs)",
        description="Manage a Triton model repository: <repository>/<model>/config.pbtxt and numbered versions.",
    )
    sub = repo.add_subparsers(dest="repo_command", metavar="ACTION", required=True)

    export = sub.add_parser(
        "export",
        help="export a torch module as the next free version of a model (needs the torch extra)",
        description="Trace a torch module into TorchScript and write it as a new version folder, atomically, "
        "with a python-backend loader, a sha256 manifest and (if the model has none) a generated config.pbtxt.",
    )
    export.add_argument("source", help="package.module:factory returning an nn.Module, or a TorchScript file")
    export.add_argument("--repository", "-r", type=Path, required=True, help="model repository root")
    export.add_argument("--model", "-m", required=True, help="model name (folder under the repository)")
    export.add_argument("--input-shape", required=True, help="per-example input shape, e.g. 4 or 3,224,224")
    export.add_argument("--max-batch-size", type=int, default=8, help="for a generated config (default 8)")
    export.add_argument("--quantize", choices=["dynamic-int8"], help="quantize Linear layers before export")
    export.add_argument("--version", type=int, help="version number (default: the next free one)")

    listing = sub.add_parser("list", help="models, versions, sizes and backends")
    listing.add_argument("repository", type=Path)

    check = sub.add_parser("validate", help="check layout, configs and manifests; non-zero exit on problems")
    check.add_argument("repository", type=Path)
    check.add_argument("--model", "-m", help="only this model")

    manifest = sub.add_parser("manifest", help=f"write a version's sha256 manifest ({MANIFEST_NAME})")
    manifest.add_argument("repository", type=Path)
    manifest.add_argument("model")
    manifest.add_argument("version", type=int)

    verify = sub.add_parser(
        "verify-version",
        help="verify one version where its bytes are (what the operator's verification Job runs)",
        description="Check that the model, its config.pbtxt and the version exist and that every file matches the "
        "version's manifest. Exit 0 when nothing is wrong (a version without a manifest is reported unverified), "
        "1 otherwise. With --verdict-file, the verdict is also written there as JSON (the Job's termination message).",
    )
    verify.add_argument("repository", help="a folder, or s3://[http(s)://host:port/]bucket/path (AWS_* credentials)")
    verify.add_argument("model")
    verify.add_argument("--version", type=int, help="default: the highest version present")
    verify.add_argument("--verdict-file", type=Path, help="also write the verdict here (e.g. /dev/termination-log)")
    verify.add_argument("--display-root", help="name the repository so in messages (e.g. its pvc:// URI)")
    verify.add_argument(
        "--no-hash",
        action="store_true",
        help="check that the manifest is there, read no file (spec.model.cache: nodes hash their copies as they stage)",
    )

    for name, text in (
        ("show", "the config Triton loads, after a ModelDeployment's overrides"),
        ("diff", "unified diff: config.pbtxt -> the config Triton loads"),
    ):
        action = sub.add_parser(name, help=text)
        action.add_argument("repository", type=Path)
        action.add_argument("model")
        action.add_argument("--version", type=int, help="version (default: the ModelDeployment's, else the highest)")
        action.add_argument("--modeldeployment", "-f", type=Path, help="ModelDeployment YAML whose overrides apply")


def run_repo(args: argparse.Namespace) -> int:
    if args.repo_command == "verify-version":
        return verify_version(
            args.repository, args.model, args.version, args.verdict_file, args.display_root, not args.no_hash
        )
    from tritonop.repository import tools

    try:
        if args.repo_command == "export":
            shape = [int(part) for part in args.input_shape.split(",")]
            result = tools.export(
                args.source, args.repository, args.model, shape, args.max_batch_size, args.quantize, args.version
            )
            config = "written" if result.config_written else "kept"
            print(f"{result.version_dir} ({len(result.files)} files, config {config})")
        elif args.repo_command == "list":
            rows = tools.list_models(args.repository)
            print(f"{'MODEL':<24} {'VERSION':>7} {'SIZE':>10}  {'BACKEND':<12} MANIFEST")
            for row in rows:
                size, manifest = f"{row['bytes'] / 1024:.1f}K", "yes" if row["manifest"] else "no"
                print(f"{row['model']:<24} {row['version']:>7} {size:>10}  {row['backend']:<12} {manifest}")
        elif args.repo_command == "validate":
            problems = tools.validate(args.repository, args.model)
            for problem in problems:
                print(f"error: {problem}", file=sys.stderr)
            if problems:
                return 1
            print(f"{args.repository}: valid")
        elif args.repo_command == "manifest":
            files = tools.write_manifest(args.repository / args.model / str(args.version))
            print(f"{args.repository / args.model / str(args.version) / MANIFEST_NAME}: {len(files)} files")
        else:
            overrides, md_version, _ = tools.overrides_from(args.modeldeployment)
            version = args.version if args.version is not None else md_version
            render = tools.show if args.repo_command == "show" else tools.diff
            sys.stdout.write(render(args.repository, args.model, version, overrides))
    except tools.RepositoryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


class JsonFormatter(logging.Formatter):
    """One JSON object per line; lines about a ModelDeployment carry its namespace and name."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, field in (("namespace", "namespace"), ("model_deployment", "modelDeployment")):
            if hasattr(record, key):
                entry[field] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def verify_version(
    repository: str,
    model: str,
    version: int | None,
    verdict_file: Path | None,
    display_root: str | None = None,
    hash_files: bool = True,
) -> int:
    """One version checked where its bytes are; needs nothing beyond the operator's runtime deps.
    An s3:// repository is read with the servers' credentials (their Secret's AWS_* variables)."""
    if repository.startswith("s3://"):
        try:
            tree = S3Path.open_repository(repository, S3Credentials.from_environment(os.environ), subtree=model)
        except Exception as error:  # unreachable endpoint, refused credentials, no such bucket
            report = RepositoryReport(True, "RepositoryUnreadable", f"cannot list {repository}: {error}")
        else:
            report = inspect_tree(tree, model, version, hash_files=hash_files)
        root = repository.rstrip("/")
    else:
        root = str(Path(repository).resolve())
        report = inspect(f"file://{root}", model, version, hash_files=hash_files)
    if display_root:
        report = replace(report, message=report.message.replace(root, display_root.rstrip("/")))
    checked = version if version is not None else (report.versions[-1] if report.versions else None)
    if verdict_file is not None:
        verdict_file.write_text(report.to_verdict(checked))
    if report.problem:
        print(f"error: {report.problem}: {report.message}", file=sys.stderr)
        return 1
    print(("verified: " if report.verified else "unverified: ") + report.message)
    return 0


def settings_from(args: argparse.Namespace) -> Settings:
    """The operator's settings from `tritonop run` flags (the only place that reads the environment)."""
    election = None
    if args.leader_elect:
        try:  # refuse inconsistent timings before starting anything
            election = ElectionConfig(
                namespace=args.leader_election_namespace or own_namespace(),
                name=args.leader_election_id,
                lease_duration=args.lease_duration,
                renew_deadline=args.renew_deadline,
                retry_period=args.retry_period,
            )
        except ValueError as error:
            sys.exit(f"tritonop run: {error}")
    return Settings(
        # None: in-cluster, else the kubernetes package's default (~/.kube/config).
        kubeconfig=args.kubeconfig or os.environ.get("KUBECONFIG"),
        metrics_port=args.metrics_port,
        workers=args.workers,
        resync_seconds=args.resync_seconds,
        relist_seconds=args.relist_seconds,
        autoscale_period_seconds=args.autoscale_period_seconds,
        autoscale_report_seconds=args.autoscale_report_seconds,
        in_cluster=bool(os.environ.get("KUBERNETES_SERVICE_HOST")),
        clusterwide=not args.namespace,
        verifier_image=args.verifier_image or DEFAULT_VERIFIER_IMAGE,  # preflight() may set the pod's own
        election=election,
    )


def own_pod() -> tuple[str, str] | None:
    """(namespace, name) of the operator's pod, from the downward API's POD_NAMESPACE and POD_NAME
    (the manifests and the chart set them); None out of a pod."""
    namespace, name = os.environ.get("POD_NAMESPACE"), os.environ.get("POD_NAME")
    return (namespace, name) if namespace and name else None


def kopf_identity() -> str:
    """The identity handed to kopf.run. kopf computes one at start even with standalone=True, and its
    default calls getpass.getuser(), which raises KeyError("getpwuid(): uid not found: 1000") when
    the uid has no passwd entry: the operator image runs as USER 1000:1000 on python:3.11-slim,
    which has none. That crashed every operator pod at start (found on the dev cluster's real node)."""
    pod = own_pod()
    return pod[1] if pod else f"tritonop@{socket.gethostname()}"


async def run_preflight(settings: Settings, pod: tuple[str, str] | None, verifier_image_given: bool) -> Settings:
    """preflight() with a client of its own (kopf's handlers make theirs once kopf runs)."""
    from tritonop.k8s import KubeClient
    from tritonop.preflight import preflight

    kube = KubeClient.from_environment(settings.kubeconfig)
    try:
        return await preflight(kube, settings, pod, verifier_image_given)
    finally:
        await kube.close()


def run_operator(args: argparse.Namespace) -> None:
    settings = settings_from(args)
    handler = logging.StreamHandler()
    if args.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    from kubernetes.config import ConfigException

    from tritonop.preflight import UnsupportedKubernetes

    try:
        settings = asyncio.run(run_preflight(settings, own_pod(), args.verifier_image is not None))
    except UnsupportedKubernetes as error:
        logging.getLogger("tritonop").error("%s", error)
        sys.exit(1)
    except ConfigException as error:
        logging.getLogger("tritonop").error("cannot load Kubernetes credentials: %s", error)
        sys.exit(1)
    import kopf

    import tritonop.handlers  # noqa: F401 - registers the handlers

    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        standalone=True,  # coordination is our own Lease (--leader-elect), not kopf peering
        identity=kopf_identity(),  # type: ignore[arg-type]  # kopf's Identity is a NewType of str
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
        memo=kopf.Memo(settings=settings),
    )


def own_namespace() -> str:
    """The pod's namespace from its ServiceAccount mount; tritonop-system out of a cluster."""
    path = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return path.read_text().strip() if path.exists() else "tritonop-system"


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        run_operator(args)
    elif args.command == "repo":
        sys.exit(run_repo(args))
    elif args.command == "cache":
        sys.exit(run_cache(args))
    elif args.command == "crd":
        from tritonop.api.crd import render_yaml

        sys.stdout.write(render_yaml())
    else:
        parser.print_help()
        sys.exit(2)


if __name__ == "__main__":
    main()
