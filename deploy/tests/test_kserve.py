"""deploy/kserve/: the runtime's container, started as the manifests give it (command, args
and env, the port, the user, a read-only root, the CPU and memory limits), answers the probes,
the metrics path and the model name that the manifests name; the CPU limit matches the engine
threads; --allowed-hosts answers the cluster's names and refuses others."""

import json
import subprocess
import uuid

import yaml

from conftest import REPO, free_port, get, need, wait_ready

KSERVE = REPO / "deploy" / "kserve"


def load(name):
    return yaml.safe_load((KSERVE / name).read_text())


def cpus(quantity):
    """A Kubernetes CPU quantity ("2", "1500m") in CPUs."""
    quantity = str(quantity)
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def mebibytes(quantity):
    quantity = str(quantity)
    assert quantity.endswith("Mi"), f"memory {quantity}: the test reads Mi quantities"
    return int(quantity[:-2])


def flag(args, name):
    return args[args.index(name) + 1]


def test_the_manifests_match_the_server(image):
    tag, _ = image
    runtime = load("servingruntime.yaml")
    service = load("inferenceservice.yaml")
    assert runtime["kind"] == "ServingRuntime" and service["kind"] == "InferenceService"
    predictor = service["spec"]["predictor"]["model"]
    assert predictor["runtime"] == runtime["metadata"]["name"]
    assert predictor["protocolVersion"] == "v2" and "v2" in runtime["spec"]["protocolVersions"]
    assert predictor["modelFormat"]["name"] in [f["name"] for f in runtime["spec"]["supportedModelFormats"]]
    [container] = runtime["spec"]["containers"]
    model = service["metadata"]["name"]
    # What KServe does to the args: {{.Name}} is the InferenceService's name.
    args = [a.replace("{{.Name}}", model) for a in container["args"]]
    env = {e["name"]: e["value"] for e in container.get("env") or []}
    [port] = container["ports"]
    container_port = port["containerPort"]
    assert flag(args, "--addr") == f"0.0.0.0:{container_port}"

    # CPU: requests equal limits (a guaranteed share), engine threads fill the limit.
    resources = container["resources"]
    assert resources["requests"] == resources["limits"], resources
    cpu_limit = cpus(resources["limits"]["cpu"])
    workers, threads = int(flag(args, "--workers")), int(flag(args, "--threads"))
    assert workers * threads == cpu_limit, f"--workers {workers} × --threads {threads} vs a CPU limit of {cpu_limit}"

    security = container["securityContext"]
    host_port = free_port()
    name = f"cifar10-kserve-{uuid.uuid4().hex[:8]}"
    run = [need("podman"), "run", "--detach", "--name", name, "--entrypoint", json.dumps(container["command"])]
    run += ["--user", f"{security['runAsUser']}:{security['runAsGroup']}", "--cap-drop=all"]
    if security["readOnlyRootFilesystem"]:
        run.append("--read-only")
    run += ["--cpus", str(cpu_limit), "--memory", f"{mebibytes(resources['limits']['memory'])}m"]
    for key, value in env.items():
        run += ["--env", f"{key}={value}"]
    run += ["--publish", f"127.0.0.1:{host_port}:{container_port}", tag, *args]
    subprocess.run(run, check=True, capture_output=True)
    try:
        base = f"http://127.0.0.1:{host_port}"
        wait_ready(base)
        # The probes, on the port they name, with the Host a kubelet sends (the pod's IP).
        for probe in ("livenessProbe", "readinessProbe"):
            http_get = container[probe]["httpGet"]
            assert http_get["port"] == container_port, probe
            status, _ = get(f"{base}{http_get['path']}", host=f"10.1.2.3:{container_port}")
            assert status == 200, f"{probe} {http_get['path']} answered {status}"
        assert [container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")] == [
            "/v2/health/live",
            "/v2/health/ready",
        ]
        # Prometheus: the port and path of the annotations.
        annotations = runtime["spec"]["annotations"]
        scrape = service["metadata"]["annotations"]
        assert scrape["serving.kserve.io/enable-prometheus-scraping"] == "true"
        assert annotations["prometheus.kserve.io/port"] == scrape["prometheus.io/port"] == str(container_port)
        assert annotations["prometheus.kserve.io/path"] == scrape["prometheus.io/path"]
        status, body = get(f"{base}{scrape['prometheus.io/path']}", host=f"10.1.2.3:{container_port}")
        assert status == 200, f"metrics answered {status}"
        for metric in ("cifar10_queue_depth_images", "cifar10_request_duration_seconds_bucket"):
            assert metric in body.decode(), f"{metric} missing from /metrics"
        # The model name: the InferenceService's, under the names the cluster sends.
        for host in (f"{model}.default.example.com", f"{model}-predictor.default.svc.cluster.local"):
            status, body = get(f"{base}/v2/models/{model}", host=host)
            assert status == 200, f"/v2/models/{model} with Host {host} answered {status}: {body[:200]!r}"
            assert json.loads(body)["name"] == model
            assert get(f"{base}/v2/models/{model}/ready", host=host)[0] == 200
        status, _ = get(f"{base}/v2/models/{model}", host="cifar10.attacker.test")
        assert status == 403, f"a Host outside --allowed-hosts answered {status}"
        # The start-up line says what the flags set up.
        logs = subprocess.run([need("podman"), "logs", name], capture_output=True, text=True).stderr
        assert f"as '{model}'" in logs and f"{workers} engine worker(s) × {threads} thread(s)" in logs, logs
    finally:
        subprocess.run([need("podman"), "rm", "--force", name], capture_output=True)
