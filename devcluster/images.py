"""Container images for the real node, built here without Docker or a registry, cached under
~/.cache/tritonop/images/ (see docs/real-node.md):

- a Debian bookworm rootfs from Debian's packages (mmdebstrap, minbase + python3, numpy,
  libpython3.11), the base of the images below;
- a CPU Triton image: that base plus tritonserver, its backends and libraries from the
  nvidia-pytriton wheel in this venv, laid out as NGC's image (/opt/tritonserver).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
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
