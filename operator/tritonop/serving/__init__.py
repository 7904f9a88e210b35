"""Bringing every Triton server of a ModelDeployment to the target version and config.

The in-place switch protocol (rollout.strategy InPlace), per running pod, in one reconcile
(`Servers.converge`); each step names the function that does it. Deciding is pure (plan.py:
`plan` per pod; swap.py: `next_swap_step`), doing is not (servers.py, steps.py, gates.py):

1. Probe (`Servers.probe`). Ask the server at the pod IP whether it is live, which versions of the
   model are READY (the repository index: Triton keeps reporting an old version_policy after a
   version-only reload, so the index is the truth) and the config it loaded.
2. Decide what is wanted (`Servers.base_config`, `wanted_config`). The base config is the
   repository's config.pbtxt when the operator can read the repository; else the config a serving
   pod reports (learned, per ModelDeployment); with neither, Triton loads the repository's config
   as-is once and the operator learns it (`PodSteps.learn_config`).
   Wanted = base + the spec's overrides + version_policy {specific: [target]}.
   A broken repository (RepositoryValid=False), or overrides that cannot work with the
   repository's config (preferred batch sizes above its max_batch_size), load nothing: what
   serves keeps serving, and ModelLoaded says why (`plan` -> REPOSITORY_BLOCKS, CONFIG_PROBLEM).
3. Current? (`config_is_current`; `plan` -> CURRENT) The pod serves exactly [target] and the
   fields the operator sets (max_batch_size, dynamic_batching, instance counts) are as wanted:
   nothing to do.
4. Load beside (`plan` -> LOAD_BESIDE; `PodSteps.load_beside`). If the pod serves other versions
   and not the target, load the wanted config (target only), in one load request: Triton loads
   the target while the old versions keep answering (a request for the model goes to its highest
   READY version), and the call returns when the target is READY (or fails).
5. Retire: done by Triton at the end of that same request. Once every version a request lists is
   READY, Triton unloads the versions it does not list, after their in-flight requests finish.
   No pod restarts; no failed requests. (`plan` -> RETIRE only for a pod found serving the target
   beside older versions, a switch left half done: the wanted config is loaded again.)
   One load per switch: Triton 2.51 reloads a READY version that a load request lists whenever
   that version's folder changed since the previous load request read the repository (a
   python-backend stub writes __pycache__ there the first time it loads a version) or the config
   differs beyond instance_group and version_policy (core model_lifecycle.cc,
   ModelLifeCycle::AsyncLoad; model_config_utils.cc, ConfigChangeRequiresReload). The old
   versions are not in the request, so they are never reloaded, and the target is loaded once.
   Device memory holds the old versions and one copy of the target: two copies, not three (a
   side-by-side request listing old + target, then a retire listing the target, could reload
   the old version beside the new one and then the new one again).
6. Open the gate (`Gates.open_gate`). Once the pod serves the target with the wanted config, set
   its readiness gate condition (tritonop.dev/model-ready) True, so Services send it traffic. A
   pod that starts later (scale-up, rescheduling) loads the target alone first (`plan` ->
   LOAD_ALONE) before its gate opens.

When the target does not fit beside the old version (Triton refuses the load in step 4 for lack
of device memory: `does_not_fit`; the old version keeps serving), the switch becomes a pod-by-pod
swap, from the next reconcile on (`Servers.converge_by_swap`, the pod next in turn chosen by
`next_swap_step`):
a. one pod at a time, and only while every other pod is Ready (the PodDisruptionBudget's
   maxUnavailable is 1), close that pod's readiness gate (`Gates.close_gate`);
b. wait until Kubernetes shows it not Ready (load balancers drop it), then until its clients
   have moved: nothing queued and no request finished for 2 s (kept-alive connections keep
   sending until they reconnect) (`Gates.drained`);
c. unload the old version (Triton finishes the requests in flight first; `Gates.unloaded`), load
   the target alone (`PodSteps.swap`), and reopen the gate (step 6). If the target fails to load,
   the old version is loaded back (`PodSteps.load_back`) and the gate reopened: the pod serves
   what it served before. It is retried after FAILED_LOAD_RETRY_SECONDS; while the pod next in
   turn has such a failure, the swap waits and takes no other pod in its place.
With one replica a swap is downtime: it happens only with spec.rollout.allowSwapDowntime, and
status says so (Progressing=True SwappingVersion, "it does not serve during the swap",
`swap_notice`) and a SwapPending Event in the reconcile before the swap starts; without it,
ModelLoaded=False InsufficientMemoryForSwitch says what to do (`swap_blocked`). The swap is
remembered in memory only: after an operator restart, the next side-by-side load fails the same
way and the swap resumes, taking first a pod whose gate a swap had already closed (it is not
Ready). New pods (scale-up) load the target alone.

A load that fails leaves the old version serving; ModelLoaded=False carries Triton's message and
a LoadFailed Warning is posted. The failure is remembered per pod (`FailedLoad`): the same config
is retried after FAILED_LOAD_RETRY_SECONDS, a changed config at once (`plan` -> BACK_OFF). A
server that does not answer at all (the pod going away, the server restarting) is nobody's
failure: the next reconcile looks again.

With Recreate/Rolling, pods whose template is older than the spec keep their version until the
Deployment replaces them (`plan` -> AWAITING_REPLACEMENT); new pods are brought to the target.
"""

from tritonop.serving.gates import (
    SWAP_DRAIN_TIMEOUT_SECONDS,
    SWAP_GRACE_SECONDS,
    SWAP_POLL_SECONDS,
    SWAP_QUIET_SECONDS,
    Gates,
)
from tritonop.serving.memory import FAILED_LOAD_RETRY_SECONDS, FailedLoad, ServingMemory, SwapNeed
from tritonop.serving.plan import OUT_OF_MEMORY, Action, Kind, LoadResult, Probe, config_is_current, plan
from tritonop.serving.servers import Converged, Servers, Target, pod_facts
from tritonop.serving.swap import SwapKind, SwapPod, SwapStep, next_swap_step

__all__ = [
    "FAILED_LOAD_RETRY_SECONDS",
    "OUT_OF_MEMORY",
    "SWAP_DRAIN_TIMEOUT_SECONDS",
    "SWAP_GRACE_SECONDS",
    "SWAP_POLL_SECONDS",
    "SWAP_QUIET_SECONDS",
    "Action",
    "Converged",
    "FailedLoad",
    "Gates",
    "Kind",
    "LoadResult",
    "Probe",
    "Servers",
    "ServingMemory",
    "SwapKind",
    "SwapNeed",
    "SwapPod",
    "SwapStep",
    "Target",
    "config_is_current",
    "next_swap_step",
    "plan",
    "pod_facts",
]
