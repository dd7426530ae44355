"""Shared pieces of the deployment tests: the image (built once by scripts/build-image.sh,
removed at the end), the static `cifar10` it holds, free loopback ports, polling, and the
first sample images with the library's own probabilities for them."""

import json
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
STATIC_BINARY = REPO / "target" / "x86_64-unknown-linux-gnu" / "release" / "cifar10"
SAMPLE = REPO / "data" / "sample" / "test_batch.bin"
RECORD_LEN = 1 + 3 * 32 * 32


def need(tool):
    """The path of a tool the tests cannot do without: missing is a failure, never a skip."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"{tool} not found: run scripts/setup-container.sh (scripts/setup.sh runs it)")
    return path


@pytest.fixture(scope="session")
def image():
    """(tag, static binary): scripts/build-image.sh run once under a unique tag; the image is
    removed when the session ends."""
    podman = need("podman")
    tag = f"localhost/cifar10-serve-test:{uuid.uuid4().hex[:12]}"
    subprocess.run(["bash", str(REPO / "scripts" / "build-image.sh"), tag], check=True, cwd=REPO)
    try:
        yield tag, STATIC_BINARY
    finally:
        subprocess.run([podman, "rmi", "--force", tag], check=False, capture_output=True)


def free_port():
    """A loopback port free right now (for podman -p and nginx, which cannot report a port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def poll(what, check, timeout=20.0):
    """Calls `check` until it returns something true (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(0.02)


# Loopback only: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url, host=None, timeout=5.0):
    """(status, body) of a GET; connection errors give status None."""
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with OPENER.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError, OSError):
        return None, b""


def wait_ready(base, timeout=20.0):
    poll(f"{base}/v2/health/ready", lambda: get(f"{base}/v2/health/ready")[0] == 200, timeout)


def metric(base, name):
    """One unlabelled value from /metrics."""
    status, body = get(f"{base}/metrics")
    assert status == 200, f"/metrics answered {status}"
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def sample_images(count):
    """The first `count` sample records as uint8 [N, 32, 32, 3], and the raw records."""
    records = np.fromfile(SAMPLE, dtype=np.uint8, count=count * RECORD_LEN).reshape(count, RECORD_LEN)
    images = records[:, 1:].reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), records.tobytes()


def library_probabilities(binary, records, tmp_path):
    """The library's probabilities (infer::Classifier, through `cifar10 classify --json`, the
    bundled float model) for CIFAR-10 records, as float32 [N, 10] in class order."""
    path = tmp_path / "records.bin"
    path.write_bytes(records)
    out = subprocess.run(
        [str(binary), "classify", "--json", "--top", "10", str(path)], check=True, capture_output=True, text=True
    ).stdout
    rows = []
    for line in out.splitlines():
        probabilities = np.zeros(10, dtype=np.float32)
        for entry in json.loads(line)["top"]:
            probabilities[entry["class"]] = entry["probability"]
        rows.append(probabilities)
    return np.stack(rows)


@pytest.fixture
def scratch():
    """A temporary folder, removed afterwards (pytest's tmp_path keeps the last few)."""
    with tempfile.TemporaryDirectory(prefix="cifar10-deploy-") as path:
        yield pathlib.Path(path)
