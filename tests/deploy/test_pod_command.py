"""The cpu-demo Deployment's container, run locally exactly as rendered (issue 17): its command,
args and env (the Secret's key, $(VAR) expansion as Kubernetes does it), the image's ENV from
deploy/docker/Dockerfile.cpu beneath them, and the probes' paths and named port.

Volumes become host directories (the cost-table/kernel cache: this machine's sparkserve cache, as a
hostPath would be; emptyDirs: fresh directories); env values under a mount path are rewritten to
them. Everything else is verbatim, including ``--host=0.0.0.0 --port=8000``: the container runs in
a private network namespace of its own (``unshare -n``, root), so it touches none of the host's
ports. ``pod_sim.py`` plays kubelet: startup probe, readiness, liveness, a completion, deletion."""
import base64
import json
import os
import re
import shutil
import subprocess
import sys

from tests.deploy.tools import DEPLOY, ROOT, missing, one, rendered

OVERLAY = "cpu-demo"
SIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pod_sim.py")
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ is a literal $, others stay."""
    def sub(m):
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, text)


def image_env(dockerfile: str) -> dict[str, str]:
    """The ``ENV k=v`` pairs of a Dockerfile (continuation lines joined)."""
    with open(dockerfile) as f:
        text = f.read().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                k, _, v = pair.partition("=")
                env[k] = v
    return env


def secret_value(docs, ref: dict) -> str:
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == ref["name"])
    if ref["key"] in secret.get("stringData", {}):
        return secret["stringData"][ref["key"]]
    return base64.b64decode(secret["data"][ref["key"]]).decode()


def container_env(docs, container, mounts: dict[str, str]) -> dict[str, str]:
    env = image_env(os.path.join(DEPLOY, "docker", "Dockerfile.cpu"))
    for e in container.get("env", []):
        if "valueFrom" in e:
            env[e["name"]] = secret_value(docs, e["valueFrom"]["secretKeyRef"])
        else:
            env[e["name"]] = expand(e.get("value", ""), env)
    for k, v in env.items():  # volumes: container paths -> host directories
        for mount_path, host in mounts.items():
            if v == mount_path or v.startswith(mount_path.rstrip("/") + "/"):
                env[k] = host + v[len(mount_path):]
    # the image's PATH holds sparkserve; here that is this interpreter's environment
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")
    return env


def host_mounts(pod_spec, container, tmp_path) -> dict[str, str]:
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    cache = os.environ.get("SPARKSERVE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "sparkserve")
    mounts = {}
    for m in container["volumeMounts"]:
        assert "emptyDir" in volumes[m["name"]], f"the cpu-demo pod needs no volume but emptyDirs: {m}"
        host = cache if m["name"] == "cache" else str(tmp_path / m["name"])
        os.makedirs(host, exist_ok=True)
        mounts[m["mountPath"]] = host
    return mounts


def test_rendered_deployment_runs_as_written(tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        missing("needs a private network namespace (unshare -n as root) to bind the pod's 0.0.0.0:8000")
    docs = rendered(OVERLAY)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env = container_env(docs, c, host_mounts(pod, c, tmp_path))
    argv = [expand(a, env) for a in c["command"] + c["args"]]
    port = next(p["containerPort"] for p in c["ports"] if p["name"] == "http")
    for name in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[name]["httpGet"]["port"] == "http"
    spec = {"argv": argv, "env": env, "cwd": str(tmp_path), "port": port, "log": str(tmp_path / "pod.log"),
            "probes": {k: c[k] for k in ("startupProbe", "readinessProbe", "livenessProbe")},
            "pre_stop_s": c["lifecycle"]["preStop"]["sleep"]["seconds"],
            "grace_s": pod["terminationGracePeriodSeconds"], "api_key": env["SPARKSERVE_API_KEY"]}
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    budget = spec["probes"]["startupProbe"]["periodSeconds"] * spec["probes"]["startupProbe"]["failureThreshold"]
    r = subprocess.run(["unshare", "-n", sys.executable, SIM, str(tmp_path / "spec.json")], capture_output=True,
                       text=True, timeout=budget + spec["grace_s"] + 300, cwd=ROOT)
    log = (tmp_path / "pod.log").read_text(errors="replace")[-4000:] if (tmp_path / "pod.log").exists() else ""
    assert r.returncode == 0, r.stderr[-3000:] + log
    report = json.loads(r.stdout.strip().splitlines()[-1])
    print(report)
    assert "startup_failed" not in report, (report, log)
    assert "--api-key=" + spec["api_key"] in argv and spec["api_key"]  # the Secret's key reached the args
    # before the model is loaded /ready answers 503 (or nothing yet), never 200
    assert set(report["startup_statuses"][:-1]) <= {None, 503} and report["startup_statuses"][-1] == 200
    assert report["readinessProbe"] == 200 and report["livenessProbe"] == 200, report
    assert report["completion"] == {"status": 200, "tokens": 8}, (report, log)
    assert report["without_key"] == 401
    assert report["exit_code"] == 0, (report, log)  # drained and exited within the grace period
    limit = c["resources"]["limits"]["memory"]
    assert limit.endswith("Gi") and report["rss_mib"] < float(limit[:-2]) * 1024, report
