"""Tiny OCI image archives built without a registry or Docker, for the real node's containerd.

An image here is one uncompressed layer (a tar of the given files) plus the OCI config, manifest
and index, written as an OCI image-layout tar that `ctr -n k8s.io images import` accepts:

    write_oci_archive(out, "localhost/tritonop/pause:3.10", files={"pause": pause_bytes},
                      entrypoint=["/pause"])
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

EPOCH = 0  # every file in a layer gets the same mtime, so the same inputs give the same digests


@dataclass(frozen=True)
class Entry:
    """A file (data), a symlink (link) or a directory (neither) inside a layer."""

    path: str
    data: bytes | None = None
    link: str | None = None
    mode: int = 0o755


def _layer(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mtime = EPOCH
            info.mode = entry.mode
            if entry.link is not None:
                info.type = tarfile.SYMTYPE
                info.linkname = entry.link
                info.mode = 0o777
                tar.addfile(info)
            elif entry.data is not None:
                info.size = len(entry.data)
                tar.addfile(info, io.BytesIO(entry.data))
            else:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
    return buffer.getvalue()


def _digest(blob: bytes) -> str:
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def write_oci_archive(
    out: Path,
    reference: str,
    entries: list[Entry],
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
) -> str:
    """Write an OCI image-layout tar for one linux/amd64 image named reference; returns the
    manifest digest."""
    layer = _layer(entries)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "devcluster.ociimage"}],
    }
    config_blob = json.dumps(config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(config_blob),
            "size": len(config_blob),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": _digest(layer), "size": len(layer)}
        ],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    tag = reference.rsplit(":", 1)[1] if ":" in reference.rsplit("/", 1)[-1] else "latest"
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": _digest(manifest_blob),
                "size": len(manifest_blob),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": reference, "org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    files = {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
    }
    for blob in (layer, config_blob, manifest_blob):
        files["blobs/sha256/" + _digest(blob).split(":", 1)[1]] = blob
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, mode="w") as tar:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            tar.addfile(info)
        for name, blob in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(blob), 0o644, EPOCH
            tar.addfile(info, io.BytesIO(blob))
    tmp.replace(out)
    return _digest(manifest_blob)


def pause_image(out: Path, reference: str, pause_binary: Path) -> str:
    """The pod sandbox image: kubernetes' own pause binary (built static by build-binaries.sh)."""
    return write_oci_archive(out, reference, [Entry("pause", data=pause_binary.read_bytes())], entrypoint=["/pause"])


def busybox_image(out: Path, reference: str, busybox_binary: Path, applets: list[str]) -> str:
    """A first workload image: Debian's static busybox (package busybox-static) with its applets
    linked in /bin, plus /tmp and /www."""
    entries = [Entry("bin"), Entry("tmp", mode=0o1777), Entry("www"), Entry("etc")]
    entries.append(Entry("bin/busybox", data=busybox_binary.read_bytes()))
    entries += [Entry(f"bin/{applet}", link="busybox") for applet in applets if applet != "busybox"]
    passwd = b"root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    entries.append(Entry("etc/passwd", data=passwd, mode=0o644))
    entries.append(Entry("etc/group", data=b"root:x:0:\nnogroup:x:65534:\n", mode=0o644))
    return write_oci_archive(out, reference, entries, cmd=["/bin/sh"])
