"""Pure: what one server needs, from what it answered (steps 2-5 of the in-place switch).

`plan()` takes plain values (the probe, the wanted config, the pod's version, its failed load,
the time) and returns an Action; `Servers` performs it (steps.py) and remembers what happened.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tritonclient.grpc import model_config_pb2

from tritonop.api.spec import ModelDeployment
from tritonop.owned import is_subset
from tritonop.render.model_config import effective_config, to_json
from tritonop.serving.memory import FailedLoad
from tritonop.triton import ServerUnreachable, TritonError

# How Triton's backends say a load did not fit in device memory (CUDA, TensorRT, PyTorch, ONNX Runtime).
OUT_OF_MEMORY = re.compile(r"out of memory|out_of_memory|memoryallocation|failed to allocate|\boom\b", re.IGNORECASE)


@dataclass(frozen=True)
class Probe:
    """One server as it answered (step 1)."""

    live: bool
    versions: tuple[int, ...] = ()
    config: dict[str, Any] | None = None


@dataclass(frozen=True)
class LoadResult:
    """One server after a step: what it serves now."""

    versions: tuple[int, ...]
    config: dict[str, Any] | None
    error: str | None = None
    unreachable: bool = False


class Kind(StrEnum):
    NOT_LIVE = "NotLive"  # Triton does not answer: Kubernetes' facts only
    AWAITING_REPLACEMENT = "AwaitingReplacement"  # Recreate/Rolling: an older template's pod keeps its version
    CURRENT = "Current"  # step 3: nothing to do
    CONFIG_PROBLEM = "ConfigProblem"  # the overrides cannot load with the repository's config: load nothing
    AWAITING_SWAP = "AwaitingSwap"  # a pod-by-pod swap is under way: next_swap_step takes this pod in turn
    REPOSITORY_BLOCKS = "RepositoryBlocks"  # the repository is broken or being verified: load nothing new
    AWAITING_STAGING = "AwaitingStaging"  # spec.model.cache: the version is not on the node(s) yet: load nothing
    BACK_OFF = "BackOff"  # this config failed on this pod less than FAILED_LOAD_RETRY_SECONDS ago
    LOAD_ALONE = "LoadAlone"  # load the wanted config (a new server, a config change, Recreate/Rolling)
    LOAD_BESIDE = "LoadBeside"  # steps 4-5: one load of the target; the old versions serve until it is READY
    RETIRE = "Retire"  # step 5 only: the target already serves beside older versions (a switch left half done)


LOADS = frozenset({Kind.LOAD_ALONE, Kind.LOAD_BESIDE, Kind.RETIRE})


@dataclass(frozen=True)
class Action:
    kind: Kind
    mode: str = ""  # a load: how status.lastLoad times it (Initial, SideBySide, Reload)
    old: tuple[int, ...] = ()  # a load: the versions served now besides the target
    learn_first: bool = False  # a load: the repository's config is unknown; Triton loads it as-is first
    error: str | None = None  # BACK_OFF: the failure that is waited out

    @property
    def loads(self) -> bool:
        return self.kind in LOADS


def plan(
    probe: Probe,
    wanted: str | None,
    version: int | None,
    failed: FailedLoad | None,
    now: float,
    *,
    managed: bool = True,
    in_place: bool = True,
    config_problem: bool = False,
    repository_blocks: bool = False,
    swapping: bool = False,
    staging_blocks: bool = False,
) -> Action:
    """What one server needs to serve `version` with the `wanted` config (None: unknown yet).

    managed: the operator switches this pod (InPlace/Canary, or a pod of the current template);
    config_problem: the overrides cannot load; repository_blocks: the repository blocks this
    version; swapping: a pod-by-pod swap is under way (a pod serving something waits its turn);
    staging_blocks: with a node cache, the version is not staged where this pod needs it yet."""
    if not probe.live:
        return Action(Kind.NOT_LIVE)
    if not managed:
        return Action(Kind.AWAITING_REPLACEMENT)
    if config_is_current(probe.config, list(probe.versions), wanted, version):
        return Action(Kind.CURRENT)
    if config_problem:
        return Action(Kind.CONFIG_PROBLEM)
    if swapping and probe.versions:
        return Action(Kind.AWAITING_SWAP)
    if repository_blocks:
        return Action(Kind.REPOSITORY_BLOCKS)
    if staging_blocks:
        return Action(Kind.AWAITING_STAGING)
    if failed is not None and failed.config_json == wanted and failed.recent(now):
        return Action(Kind.BACK_OFF, error=failed.message)
    old = tuple(v for v in probe.versions if v != version)
    learn = wanted is None
    if not probe.versions:
        return Action(Kind.LOAD_ALONE, "Initial", learn_first=learn)
    if in_place and version is not None and version not in probe.versions:
        return Action(Kind.LOAD_BESIDE, "SideBySide", old, learn)
    return Action(Kind.RETIRE if old and version in probe.versions else Kind.LOAD_ALONE, "Reload", old, learn)


def wanted_config(base: model_config_pb2.ModelConfig, md: ModelDeployment, version: int | None) -> str:
    """Step 2: the base config + the spec's overrides + version_policy {specific: [version]}."""
    return to_json(effective_config(base, md.model_name, md.spec.model.config, [version] if version else None))


def does_not_fit(error: TritonError) -> bool:
    """Triton refused a load for lack of device memory (a server that did not answer did not refuse)."""
    return not isinstance(error, ServerUnreachable) and OUT_OF_MEMORY.search(str(error)) is not None


def config_is_current(loaded: dict[str, Any] | None, ready: list[int], wanted: str | None, target: int | None) -> bool:
    """Step 3: the server serves exactly the target version, with the fields the operator sets as wanted.

    Versions come from the repository index: after a reload that only changes versions, Triton
    keeps reporting the previous version_policy in the model config."""
    if loaded is None:
        return False
    if ready != ([target] if target is not None else ready[-1:]) or not ready:
        return False
    if wanted is None:
        return True
    desired = json.loads(wanted)
    for key in ("max_batch_size", "dynamic_batching"):
        if key in desired and not is_subset(_numbers(desired[key]), _numbers(loaded.get(key))):
            return False
    wanted_counts = [g.get("count", 1) for g in desired.get("instance_group", [])]
    loaded_counts = [g.get("count", 1) for g in loaded.get("instance_group", [])]
    return not wanted_counts or wanted_counts == loaded_counts


def _numbers(value: Any) -> Any:
    """Triton prints int64 fields as strings in JSON; compare them as numbers."""
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value
