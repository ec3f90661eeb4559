"""Native CPU kernels (C++ in the repository's ``csrc/``), built on first use for this machine's CPU.

Every ``csrc/*.cpp`` file registers its operators into ``torch.ops.sparkserve`` with
``TORCH_LIBRARY_FRAGMENT(sparkserve, m)``; the files are compiled together into one shared library
with ``-O3 -march=native`` (so the compiler targets exactly this CPU's vector units: AVX2, AVX-512,
AVX512-BF16, AMX) and loaded with ``torch.ops.load_library``. The build directory is keyed on the
sources, the CPU's feature flags, the compiler and torch's version, so a machine with another CPU
or a changed kernel rebuilds, and everything else loads the cached library in milliseconds.

``available()`` is the one switch: False when ``SPARKSERVE_NATIVE=0``, when the sources are not
there, or when the build fails (no compiler, no ninja): callers then use their pure-torch reference,
and the reason is logged once. Each kernel keeps that reference beside it, and a test against it.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform

log = logging.getLogger("sparkserve.native")

CSRC_DIRS = (
    os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "csrc"),  # a clone
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc"),  # a wheel (package data)
)
LIBRARY_NAME = "sparkserve_cpu"


def enabled_by_env() -> bool:
    """``SPARKSERVE_NATIVE=0`` forces every kernel onto its torch reference (tests run both ways)."""
    return os.environ.get("SPARKSERVE_NATIVE", "1").strip().lower() not in ("0", "false", "off", "no")


def source_dir() -> str | None:
    return next((d for d in CSRC_DIRS if os.path.isdir(d) and _sources(d)), None)


def _sources(directory: str) -> list[str]:
    return sorted(os.path.join(directory, f) for f in os.listdir(directory) if f.endswith(".cpp"))


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_key(directory: str) -> str:
    """Hash of what the library depends on: sources and headers, CPU features, compiler, torch."""
    import torch

    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith((".cpp", ".h")):
            h.update(name.encode())
            with open(os.path.join(directory, name), "rb") as f:
                h.update(f.read())
    h.update(_cpu_flags().encode())
    h.update(torch.__version__.encode())
    h.update(os.environ.get("CXX", "c++").encode())
    return h.hexdigest()[:16]


def build_root() -> str:
    root = os.environ.get("SPARKSERVE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sparkserve")
    return os.path.join(root, "native")


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Build (once per machine and source version) and load the kernels; False means: use torch."""
    if not enabled_by_env():
        log.info("native CPU kernels off (SPARKSERVE_NATIVE=0): using the torch references")
        return False
    directory = source_dir()
    if directory is None:
        log.info("native CPU kernels not built: no csrc/ sources in this install; using the torch references")
        return False
    try:
        _build_and_load(directory)
    except Exception as e:  # no compiler, no ninja, a compile error: fall back, say so once
        log.warning("native CPU kernels unavailable (%s: %s); using the torch references",
                    type(e).__name__, str(e).strip().splitlines()[-1] if str(e).strip() else "")
        return False
    return True


def library_path(directory: str) -> str:
    """Where the shared library built from ``directory`` for this machine lives (built or not)."""
    return os.path.join(build_root(), build_key(directory), f"{LIBRARY_NAME}.so")


def _build_and_load(directory: str) -> None:
    import torch
    from torch.utils import cpp_extension

    lib = library_path(directory)
    out = os.path.dirname(lib)
    if not os.path.exists(lib):
        os.makedirs(out, exist_ok=True)
        log.info("building native CPU kernels in %s (once per machine and kernel version; 20-60 s)", out)
        flags = ["-O3", "-march=native", "-fopenmp", "-std=c++17"]
        units = write_unity_units(_sources(directory), out, os.cpu_count() or 1)
        cpp_extension.load(LIBRARY_NAME, units, extra_cflags=flags, extra_ldflags=["-fopenmp"],
                           build_directory=out, is_python_module=False, verbose=False)
    torch.ops.load_library(lib)


def write_unity_units(sources: list[str], out_dir: str, n_cores: int) -> list[str]:
    """Group the sources into one translation unit per core (``unitN.cpp`` files that ``#include`` them).

    Parsing torch's headers is most of each file's compile (4-8 s of ~9 s here), so compiling seven files
    parsed them seven times; one unit per core parses them once per core and keeps every core busy
    (first build on 2 cores: 52 s -> ~22 s). Files go largest first to the lightest unit. The price is
    that csrc files share a translation unit: file-local names must not collide (the build says so).
    """
    n_units = max(1, min(n_cores, len(sources)))
    units: list[list[str]] = [[] for _ in range(n_units)]
    loads = [0] * n_units
    for path in sorted(sources, key=lambda p: (-os.path.getsize(p), p)):
        i = loads.index(min(loads))
        units[i].append(path)
        loads[i] += os.path.getsize(path)
    paths = []
    for i, members in enumerate(units):
        path = os.path.join(out_dir, f"unit{i}.cpp")
        text = "".join(f'#include "{m}"\n' for m in sorted(members))
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)
        paths.append(path)
    return paths


def require() -> None:
    """For tests and benchmarks that must run the kernels: raise instead of falling back."""
    if not available():
        raise RuntimeError("native CPU kernels are not available here (see the sparkserve.native log line)")
