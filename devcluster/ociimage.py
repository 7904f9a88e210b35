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
    entries: list[Entry] | None = None,
    entrypoint: list[str] | None = None,
    cmd: list[str] | None = None,
    env: list[str] | None = None,
    base_layers: list[bytes] | None = None,
    user: str | None = None,
) -> str:
    """Write an OCI image-layout tar for one linux/amd64 image named reference: base_layers
    (uncompressed tars, bottom first) then one layer of entries; returns the manifest digest."""
    layers = list(base_layers or []) + ([_layer(entries)] if entries else [])
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Cmd": cmd,
            "Env": env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
            **({"User": user} if user else {}),
        },
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer) for layer in layers]},
        "history": [{"created_by": "devcluster.ociimage"} for _ in layers],
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
            for layer in layers
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
    for blob in (*layers, config_blob, manifest_blob):
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


def directory_layer(files: dict[str, Path]) -> bytes:
    """A layer holding local files and directory trees: {path in the image: local path}."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:

        def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = EPOCH
            return info

        for inside, local in files.items():
            tar.add(local, arcname=inside.lstrip("/"), filter=normalize)
    return buffer.getvalue()


def triton_cpu_image(out: Path, reference: str, debian_rootfs_tar: Path, site_packages: Path) -> str:
    """A CPU Triton image without Docker or NGC: a Debian bookworm minbase with python3, numpy and
    libpython3.11 (a tar from mmdebstrap), plus tritonserver, its backends and caches, and the
    libraries it links, from the nvidia-pytriton wheel, laid out as NGC's image does
    (/opt/tritonserver/{bin,backends,caches}; the wheel's libraries in /opt/tritonserver/lib)."""
    dist = site_packages / "pytriton" / "tritonserver"
    layer = directory_layer(
        {
            "opt/tritonserver/bin": dist / "bin",
            "opt/tritonserver/backends": dist / "backends",
            "opt/tritonserver/caches": dist / "caches",
            # The python backend's stub for the image's Python (Debian bookworm: 3.11), where
            # tritonserver looks for it, as pytriton copies it at start-up.
            "opt/tritonserver/backends/python/triton_python_backend_stub": dist
            / "python_backend_stubs"
            / "3.11"
            / "triton_python_backend_stub",
            "opt/tritonserver/lib": site_packages / "nvidia_pytriton.libs",
        }
    )
    env = [
        "PATH=/opt/tritonserver/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "LD_LIBRARY_PATH=/opt/tritonserver/lib",
    ]
    return write_oci_archive(out, reference, env=env, base_layers=[debian_rootfs_tar.read_bytes(), layer])
