"""What one reconcile found out, as plain values: the input of status (status.py, pure). Each
step's module fills its part: the pods and their measured starts (serving/), the repository
(repository/), the autoscaler (autoscale/runner.py), the canary (canary/)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tritonop.api.status import AutoscalerStatus, IntegrityStatus, LoadStatus, NodeCacheStatus, RolloutStatus
from tritonop.autoscale.tokens import VLLM_ITL, Percentile, TokenWindow
from tritonop.repository.report import RepositoryReport

# Container waiting reasons that mean "this server cannot start", surfaced as Ready's reason.
FAILING_WAIT_REASONS = frozenset(
    {
        "CrashLoopBackOff",
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)


@dataclass(frozen=True)
class PodFacts:
    name: str
    scheduled: bool = True
    unschedulable_message: str | None = None
    ready: bool = False  # the pod's Ready condition (probes and readiness gate)
    waiting_reason: str | None = None
    waiting_message: str = ""
    live: bool = False  # Triton answered on the pod IP
    ready_versions: tuple[int, ...] = ()
    config_current: bool = False  # the loaded config is the one the spec asks for
    load_error: str | None = None
    awaiting_replacement: bool = False  # Recreate/Rolling: an old pod the Deployment will replace
    unreachable: bool = False  # live, but the load call got no answer (server restarting)
    awaiting_staging: bool = False  # spec.model.cache: its version is not on its node (or every node) yet
    starting: bool = False  # its server container started moments ago and Triton does not answer yet

    def serves(self, version: int | None) -> bool:
        if version is None:
            return bool(self.ready_versions) and self.config_current
        return version in self.ready_versions and self.config_current


def node_of(pod: Mapping[str, Any]) -> str:
    """The node a pod is bound to ('' while unscheduled)."""
    return str((pod.get("spec") or {}).get("nodeName") or "")


@dataclass(frozen=True)
class StagingGate:
    """spec.model.cache: which versions are in which nodes' caches, ready to load (staging.py).

    A new server loads once its own node holds the version; a server that already serves
    switches once every node that needs the version holds it (the switch was prefetched: it
    then takes one load time, and all pods switch together)."""

    ready: frozenset[tuple[str, int]]  # (node, version) staged or found there
    needed: Mapping[int, frozenset[str]]  # version -> the nodes whose pods need it
    staged_at: Mapping[tuple[str, int], str] = field(default_factory=dict)  # (node, version) -> verdict time

    def blocks(self, node: str, version: int | None, serving: bool) -> bool:
        if version is None or (node, version) not in self.ready:
            return True
        return serving and any((other, version) not in self.ready for other in self.needed.get(version, ()))


@dataclass(frozen=True)
class PodStart:
    """One new pod's start, creation to Ready, by phase, in seconds (serving/startup.py measures it).
    A phase is None where a timestamp it needs is missing; staging is None without a node cache."""

    pod: str
    ready_at: str  # the Ready condition's lastTransitionTime
    total: float  # creation -> Ready
    scheduling: float | None  # creation -> PodScheduled
    container: float | None  # -> the server container started
    server: float | None  # -> the load began (Triton answered the operator)
    load: float  # the load this process timed
    ready: float  # load done -> Ready (the readiness gate opened, the kubelet's verdict)
    staging: float | None = None  # spec.model.cache: container started -> the node's copy ready (0: there already)

    def phases(self) -> dict[str, float]:
        """The measured phases and the total, by the name tritonop_pod_startup_seconds labels them."""
        phases = {
            "scheduling": self.scheduling,
            "container": self.container,
            "server": self.server,
            "staging": self.staging,
            "load": self.load,
            "ready": self.ready,
            "total": self.total,
        }
        return {phase: seconds for phase, seconds in phases.items() if seconds is not None}


@dataclass(frozen=True)
class Facts:
    desired_replicas: int
    repository: RepositoryReport
    target_version: int | None
    pods: tuple[PodFacts, ...] = ()
    rollout_pending: bool = False  # the Deployment still replaces pods (Recreate/Rolling, image change)
    gpu_resource: str = "nvidia.com/gpu"
    autoscale: AutoscaleFacts | None = None
    apply_refused: str | None = None  # the API server's message when it refused an owned object
    config_problem: str | None = None  # overrides that cannot load with the repository's config
    integrity: IntegrityStatus | None = None  # the target version's integrity check (verification.py)
    swap: str | None = None  # a pod-by-pod swap (the target does not fit twice) is pending or under way
    swap_blocked: str | None = None  # ... and cannot start: one replica without allowSwapDowntime
    last_load: LoadStatus | None = None  # the latest load this process timed (None: keep status's)
    rollout: RolloutStatus | None = None  # strategy Canary: the rollout after this reconcile (canary/)
    pod_versions: Mapping[str, int | None] | None = None  # a canary: what each pod should serve
    pod_starts: tuple[PodStart, ...] = ()  # new pods' starts measured in this reconcile (serving/startup.py)
    cache: tuple[NodeCacheStatus, ...] | None = None  # spec.model.cache: each node's copy (staging.py)

    def wanted(self, pod: PodFacts) -> int | None:
        """The version this pod should serve (a canary's pods differ from the rest)."""
        return wanted_version(self.pod_versions, pod.name, self.target_version)


def wanted_version(pod_versions: Mapping[str, int | None] | None, pod: str, target: int | None) -> int | None:
    """A pod's version: its own during a canary (canary.assignment), else the target."""
    return target if pod_versions is None else pod_versions.get(pod, target)


@dataclass(frozen=True)
class TokenFacts:
    """A streaming model's TTFT and ITL at the spec's percentile (None: not measured: no first
    token or no second token in the window, or the backend does not export the family)."""

    percentile: float
    ttft: Percentile | None = None
    itl: Percentile | None = None
    source: str | None = None  # the families read (comma-separated)
    window_seconds: float = 0.0
    ttft_exported: bool = False  # a TTFT family is on the pages (None above: no first token in the window)
    itl_exported: bool = False

    @classmethod
    def of(cls, window: TokenWindow | None, percentile: float) -> TokenFacts:
        if window is None:
            return cls(percentile)
        ttft, itl = window.ttft_percentile(percentile), window.itl_percentile(percentile)
        families = [window.ttft_source] if ttft is not None else []
        if itl is not None:
            families.append(VLLM_ITL)
        source = ", ".join(f for f in families if f) or None
        return cls(percentile, ttft, itl, source, window.seconds, window.ttft is not None, window.itl is not None)

    def within(self, ttft_target: int | None, itl_target: int | None) -> bool | None:
        """Both set targets held (True), one did not (False), or cannot tell yet (None)."""
        verdicts = [
            self.judge(figure, target)
            for figure, target in ((self.ttft, ttft_target), (self.itl, itl_target))
            if target is not None
        ]
        return False if False in verdicts else None if None in verdicts else True

    @staticmethod
    def judge(figure: Percentile | None, target: int | None) -> bool | None:
        """Within the target (True), above it (False), or cannot tell (None: not measured, or
        beyond the histogram's highest bucket, which is below the target)."""
        if figure is None or target is None:
            return None
        if figure.beyond_range:
            return False if figure.ms >= target else None
        return figure.ms <= target


@dataclass(frozen=True)
class AutoscaleFacts:
    """What the autoscaler measured and did in this reconcile (None: it did not evaluate)."""

    latency_ms: float | None  # the spec's metric
    p95_ms: float | None
    average_ms: float | None
    queue_ms: float | None
    window_seconds: float
    target_ms: int
    metric: str
    unreadable: tuple[str, ...] = ()
    scaled: bool = False
    unreachable: str | None = None  # the target no replica can meet (policy.unreachable_message)
    learned: AutoscalerStatus | None = None  # the learned memory to keep (None: keep status's)
    tokens: TokenFacts | None = None  # spec.autoscaling.tokenLatency: TTFT and ITL measured
    p99_ms: float | None = None
