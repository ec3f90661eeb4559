"""deploy/ checked offline (issue 17): the overlays render with ``kubectl kustomize``, every rendered
object validates strictly against the pinned Kubernetes version's schemas, ``checkov`` finds no
failed check in the manifests or the Dockerfiles (a skip must carry its reason), and the pieces
refer to each other correctly (probes, ports, selectors, grace period, GPU request, HPA metric)."""
import json
import os

import pytest

from tests.deploy.tools import DEPLOY, K8S_VERSION, OVERLAYS, one, rendered, rendered_text, run, tool

OVERLAY_IDS = [f"{o}-overlay" for o in OVERLAYS]  # not "gpu": that keyword means "needs a GPU" here

# Custom resources have no schema in kubernetes-validate; test_references checks their wiring.
CRD_KINDS = {"ServiceMonitor"}
EXPECTED_KINDS = {"Namespace", "ServiceAccount", "Secret", "Deployment", "Service", "PodDisruptionBudget",
                  "HorizontalPodAutoscaler", "ServiceMonitor", "NetworkPolicy"}


def _write(tmp_path, overlay: str, text: str) -> str:
    path = tmp_path / f"{overlay}.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_overlay_renders_every_piece(overlay):
    kinds = {d["kind"] for d in rendered(overlay)}
    assert EXPECTED_KINDS <= kinds, EXPECTED_KINDS - kinds


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_kubernetes_validate_strict(overlay, tmp_path):
    docs = rendered(overlay)
    r = run(tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, _write(tmp_path, overlay, rendered_text(overlay)))
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout + r.stderr
    for d in docs:
        if d["kind"] in CRD_KINDS:
            continue
        line = f"passed for resource {d['kind'].lower()}/{d['metadata']['name']}"
        assert line in out, f"{d['kind']} was not validated:\n{out}"


def test_kubernetes_validate_is_strict(tmp_path):
    """Control: a misspelt field (what strict mode exists for) fails validation."""
    text = rendered_text("cpu-demo").replace("terminationGracePeriodSeconds:", "terminationGracePeriodSecond:")
    r = run(tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, _write(tmp_path, "typo", text))
    assert r.returncode != 0 and "terminationGracePeriodSecond" in r.stdout + r.stderr


def _checkov(*args: str) -> list[dict]:
    r = run(tool("checkov"), "--skip-download", "--compact", "-o", "json", *args)
    assert r.returncode in (0, 1), r.stderr[-3000:]  # 1: checks failed (reported below)
    reports = json.loads(r.stdout)
    return reports if isinstance(reports, list) else [reports]


def _assert_clean(reports: list[dict], framework: str) -> None:
    assert reports and all(rep.get("check_type") == framework for rep in reports), reports
    skipped = 0
    for rep in reports:
        failed = rep["results"]["failed_checks"]
        assert not failed, [(c["check_id"], c["check_name"], c["resource"]) for c in failed]
        assert rep["summary"]["passed"] > 0
        for c in rep["results"].get("skipped_checks", []):
            reason = c.get("check_result", {}).get("suppress_comment", "")
            assert len(reason) > 20, f"{c['check_id']} skipped without a reason"
            skipped += 1
    return skipped


def test_checkov_manifests(tmp_path):
    for overlay in OVERLAYS:
        _write(tmp_path, overlay, rendered_text(overlay))
    # the two justified skips (image digest, key in env) in each overlay's Deployment, nothing else
    assert _assert_clean(_checkov("--framework", "kubernetes", "-d", str(tmp_path)), "kubernetes") == 2 * len(OVERLAYS)


def test_checkov_dockerfiles():
    reports = _checkov("--framework", "dockerfile", "-d", os.path.join(DEPLOY, "docker"))
    assert _assert_clean(reports, "dockerfile") == 0
    scanned = {os.path.basename(c["file_path"]) for rep in reports for c in rep["results"]["passed_checks"]}
    assert scanned == {"Dockerfile.cpu", "Dockerfile.cuda"}


def _container(docs):
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def _arg(args: list[str], flag: str) -> str:
    for i, a in enumerate(args):
        if a == flag:
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {args}")


@pytest.mark.parametrize("overlay", OVERLAYS, ids=OVERLAY_IDS)
def test_references(overlay):
    docs = rendered(overlay)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]
    c = _container(docs)
    args = c["args"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["command"] == ["sparkserve"] and args[0] == "launch"
    assert ports["http"] == int(_arg(args, "--port"))
    for probe, path in (("startupProbe", "/ready"), ("readinessProbe", "/ready"), ("livenessProbe", "/health")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    # startup: sized for loading plus profiling (>= 5 minutes)
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 300
    grace, pre_stop = pod["spec"]["terminationGracePeriodSeconds"], c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert grace > pre_stop + float(_arg(args, "--shutdown-timeout")) + 5
    # the API key comes from the Secret
    key_env = next(e for e in c["env"] if e["name"] == "SPARKSERVE_API_KEY")
    secret = one(docs, "Secret")
    assert key_env["valueFrom"]["secretKeyRef"] == {"name": secret["metadata"]["name"], "key": "api-key"}
    assert _arg(args, "--api-key") == "$(SPARKSERVE_API_KEY)"
    # the cost-table cache is a volume
    cache_dir = next(e["value"] for e in c["env"] if e["name"] == "SPARKSERVE_CACHE_DIR")
    assert cache_dir in {m["mountPath"] for m in c["volumeMounts"]}
    # non-root, read-only root filesystem
    assert pod["spec"]["securityContext"]["runAsNonRoot"] and c["securityContext"]["readOnlyRootFilesystem"]
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
        obj = one(docs, kind)
        selector = obj["spec"].get("selector") or obj["spec"]["podSelector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= pod["metadata"]["labels"].items(), kind
    service = one(docs, "Service")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    monitor = one(docs, "ServiceMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    policy = one(docs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"][0]["port"] == ports["http"]
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "sparkserve_num_requests_waiting"
    gpus = c["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpus == 1) == (overlay == "gpu")
    if overlay == "gpu":
        assert _arg(args, "--model") == "/models/model" and _arg(args, "--device") == "cuda"
        assert any(m["mountPath"] == "/models" and m.get("readOnly") for m in c["volumeMounts"])


def test_prometheus_adapter_rule_names_the_hpa_metric():
    """The adapter rule turns the exported gauge into exactly the metric the HPA asks for."""
    import re

    import yaml

    with open(os.path.join(DEPLOY, "k8s", "prometheus-adapter-values.yaml")) as f:
        rule = yaml.safe_load(f)["rules"]["custom"][0]
    assert rule["seriesQuery"].startswith("sparkserve:num_requests_waiting{")
    name = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), "sparkserve:num_requests_waiting")
    hpa = one(rendered("cpu-demo"), "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == name


def test_gpu_overlay_does_not_start_without_a_key():
    """The base Secret is empty on purpose: the GPU pod refuses to start until the key is set,
    instead of serving unauthenticated."""
    import subprocess
    import sys

    docs = rendered("gpu")
    assert one(docs, "Secret")["stringData"]["api-key"] == ""
    args = [a.replace("$(SPARKSERVE_API_KEY)", "") for a in _container(docs)["args"]]
    r = subprocess.run([sys.executable, "-m", "sparkserve.cli", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--api-key is empty" in r.stderr, r.stderr
