"""``sparkserve kernels``: build the native CPU kernels for this machine now (what the first start would
otherwise do), or report whether they are built, and say where they live and why if they cannot be.

    sparkserve kernels [--check]

Run it after installing (or in a container's entrypoint on the serving host: the kernels target the CPU
they are compiled on) so that the first ``sparkserve launch`` skips the 20-60 s build. Exit status 0 when
the kernels load, 1 when this machine falls back to the torch references (the reason is printed).
"""
from __future__ import annotations

import argparse
import logging
import os
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--check", action="store_true", help="build nothing: report whether a build for this machine, "
                   "these sources and this torch is cached")


def run(args: argparse.Namespace) -> int:
    from sparkserve import native

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    directory = native.source_dir()
    if directory is None:
        print("no csrc/ sources in this install: the torch references run (install from a source checkout)")
        return 1
    library = native.library_path(directory)
    if args.check:
        built = os.path.exists(library)
        print(f"native CPU kernels {'built' if built else 'not built'}: {library}")
        return 0 if built else 1
    start = time.perf_counter()
    if not native.available():
        print("native CPU kernels unavailable here; the torch references run (reason above)")
        return 1
    print(f"native CPU kernels ready in {time.perf_counter() - start:.1f} s: {library}")
    return 0
