"""Container images for the real node, built here without Docker or a registry, cached under
~/.cache/tritonop/images/ (see docs/real-node.md):

- a Debian bookworm rootfs from Debian's packages (mmdebstrap, minbase + python3, numpy,
  libpython3.11), the base of the images below;
- a CPU Triton image: that base plus tritonserver, its backends and libraries from the
  nvidia-pytriton wheel in this venv, laid out as NGC's image (/opt/tritonserver);
- the operator image, as operator/Dockerfile builds it (the project's wheel and its runtime
  dependencies, entrypoint `tritonop`, user 1000), on that base instead of python:3.11-slim.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from . import ociimage

DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3", "python3-numpy", "libpython3.11")


def log(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


def debian_rootfs(cache_dir: Path) -> Path:
    """A Debian minbase rootfs tar with python3 and numpy (mmdebstrap, as root); built once."""
    out = cache_dir / "images" / f"debian-{DEBIAN_SUITE}-python3.rootfs.tar"
    if out.exists():
        return out
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("building the Debian base needs mmdebstrap (apt-get install mmdebstrap)")
    out.parent.mkdir(parents=True, exist_ok=True)
    mirror = os.environ.get("TRITONOP_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    log(f"building the Debian {DEBIAN_SUITE} base with mmdebstrap from {mirror} (about 90 s; progress below)")
    started = time.monotonic()
    tmp = out.with_name(out.name.removesuffix(".tar") + ".tmp.tar")  # mmdebstrap picks the format by suffix
    subprocess.run(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            '--aptopt=Acquire::Retries "3"',
            DEBIAN_SUITE,
            str(tmp),
            mirror,
        ],
        check=True,
    )
    tmp.replace(out)
    log(f"Debian base built in {time.monotonic() - started:.0f}s: {out}")
    return out


def pytriton_site_packages() -> tuple[Path, str]:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed in this Python environment")
    package = Path(next(iter(spec.submodule_search_locations)))
    return package.parent, importlib.metadata.version("nvidia-pytriton")


def triton_cpu_image(cache_dir: Path) -> tuple[Path, str]:
    """(OCI archive, image reference) of the CPU Triton image; built once per pytriton version."""
    site_packages, version = pytriton_site_packages()
    reference = f"localhost/tritonop/triton-cpu:pytriton-{version}"
    out = cache_dir / "images" / f"triton-cpu-pytriton-{version}.oci.tar"
    if not out.exists():
        base = debian_rootfs(cache_dir)
        started = time.monotonic()
        ociimage.triton_cpu_image(out, reference, base, site_packages)
        log(f"{reference} written in {time.monotonic() - started:.0f}s: {out}")
    return out, reference


def _source_digest(repo_root: Path) -> str:
    """What the operator image is built from: pyproject.toml and operator/tritonop/**."""
    digest = hashlib.sha256((repo_root / "pyproject.toml").read_bytes())
    for path in sorted((repo_root / "operator" / "tritonop").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(repo_root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


ENTRYPOINT_SCRIPT = b"""#!/usr/bin/python3
import sys

from tritonop.cli import main

sys.exit(main())
"""


def operator_image(cache_dir: Path, repo_root: Path) -> tuple[Path, str]:
    """(OCI archive, image reference) of the operator image, rebuilt when its sources change:
    `pip wheel` of the project, `pip install --target` of it and its dependencies (cp311
    manylinux wheels from PyPI, for the base's Python 3.11), a `tritonop` entrypoint."""
    version = importlib.metadata.version("tritonop") if _installed("tritonop") else "0.1.0"
    tag = f"{version}-{_source_digest(repo_root)}"
    reference = f"localhost/tritonop/tritonop:{tag}"
    out = cache_dir / "images" / f"tritonop-{tag}.oci.tar"
    if out.exists():
        return out, reference
    base = debian_rootfs(cache_dir)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="tritonop-image-") as work:
        wheels, target = Path(work) / "wheels", Path(work) / "site-packages"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        subprocess.run(
            [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(repo_root)], check=True
        )
        platforms = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
        subprocess.run(
            [
                *pip,
                "install",
                "--no-compile",
                "--target",
                str(target),
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                *(f"--platform={p}" for p in platforms),
                *map(str, wheels.glob("*.whl")),
            ],
            check=True,
        )
        shutil.rmtree(target / "bin", ignore_errors=True)  # console scripts naming this venv's python
        layer = ociimage.directory_layer({"opt/tritonop/site-packages": target})
    entry = io.BytesIO()
    with tarfile.open(fileobj=entry, mode="w") as tar:
        info = tarfile.TarInfo("usr/local/bin/tritonop")
        info.size, info.mode = len(ENTRYPOINT_SCRIPT), 0o755
        tar.addfile(info, io.BytesIO(ENTRYPOINT_SCRIPT))
    env = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONPATH=/opt/tritonop/site-packages",
        "PYTHONUNBUFFERED=1",
    ]
    ociimage.write_oci_archive(
        out,
        reference,
        entrypoint=["tritonop"],
        cmd=["run", "--all-namespaces"],
        env=env,
        user="1000:1000",
        base_layers=[base.read_bytes(), layer, entry.getvalue()],
    )
    log(f"{reference} written in {time.monotonic() - started:.0f}s: {out}")
    for older in out.parent.glob("tritonop-*.oci.tar"):
        if older != out:
            older.unlink()  # built from earlier sources; about 500 MB each
    return out, reference


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True
