"""A folder of this machine as a PersistentVolume bound to one claim (hostPath, no provisioner):
how the tests and benches give pods a model repository or a node cache by claim, as a cluster
admin would with hostPath or local volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def host_path_claim(namespace: str, claim: str, volume: str, path: Path, mode: str = "ReadWriteMany") -> list[Any]:
    """The PersistentVolume `volume` (hostPath `path`) and the claim `namespace/claim` bound to it."""
    return [
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": volume},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": [mode],
                "storageClassName": "",
                "hostPath": {"path": str(path)},
                "claimRef": {"namespace": namespace, "name": claim},
            },
        },
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim, "namespace": namespace},
            "spec": {
                "accessModes": [mode],
                "storageClassName": "",
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    ]
