"""Every Kubernetes permission the operator needs, next to the code that needs it.

manifests/rbac.yaml must grant exactly these (a test compares them), so a rule nobody uses
cannot creep in, and a new API call without its rule fails the RBAC end-to-end test.
"""

from __future__ import annotations

# (apiGroup, resource) -> verbs, with the code path that uses each.
REQUIRED: dict[tuple[str, str], frozenset[str]] = {
    # handlers.py: kopf watches ModelDeployments; reconcile.py reads them from its events.
    ("tritonop.dev", "modeldeployments"): frozenset({"get", "list", "watch"}),
    # KubeClient.patch_status: status written only when it changed.
    ("tritonop.dev", "modeldeployments/status"): frozenset({"patch"}),
    # ownerReferences with blockOwnerDeletion need update on the owner's finalizers
    # (enforced where the OwnerReferencesPermissionEnforcement admission plugin is on).
    ("tritonop.dev", "modeldeployments/finalizers"): frozenset({"update"}),
    # Reconciler.run reads, KubeClient.apply creates/updates (server-side apply); kopf watches.
    ("apps", "deployments"): frozenset({"get", "list", "watch", "create", "patch"}),
    # informer.py lists and kopf watches owned Deployments, Services, PDBs and pods (the cache).
    ("", "services"): frozenset({"get", "list", "watch", "create", "patch"}),
    # PodDisruptionBudget when replicas > 1, deleted when scaled to one.
    ("policy", "poddisruptionbudgets"): frozenset({"get", "list", "watch", "create", "patch", "delete"}),
    # The model-control key: read by name, created once. Never listed or watched.
    ("", "secrets"): frozenset({"get", "create", "patch"}),
    # Reconciler lists a deployment's pods; kopf watches them to react to pod changes. preflight.py
    # reads the operator's own pod by name at start-up (its image runs the verification Jobs).
    ("", "pods"): frozenset({"get", "list", "watch"}),
    # Reconciler.open_gate sets the tritonop.dev/model-ready readiness gate.
    ("", "pods/status"): frozenset({"patch"}),
    # kopf observes CRDs, to start and stop watching resources as their CRDs come and go.
    ("apiextensions.k8s.io", "customresourcedefinitions"): frozenset({"list", "watch"}),
    # kopf observes namespaces to follow `tritonop run --namespace PATTERN` (not with --all-namespaces).
    ("", "namespaces"): frozenset({"list", "watch"}),
    # verification.py: a verification Job per (repository, version) where the operator cannot read
    # the bytes, read by name while it runs (no list/watch: Jobs are rare; the verdict is kept in status).
    ("batch", "jobs"): frozenset({"get", "create"}),
    # staging.py: spec.model.cache.nodes EligibleNodes stages versions on the nodes the servers could
    # run on (placement.py), listed at most once a minute per ModelDeployment.
    ("", "nodes"): frozenset({"list"}),
    # KubeClient.post_event: create, or bump the count of a repeated Event.
    ("", "events"): frozenset({"get", "create", "patch"}),
}

# In the operator's own namespace only (a Role, not the ClusterRole): leader.py's Lease, read,
# created once, and renewed by a conditional PUT.
LEADER_ELECTION: dict[tuple[str, str], frozenset[str]] = {
    ("coordination.k8s.io", "leases"): frozenset({"get", "create", "update"}),
}
