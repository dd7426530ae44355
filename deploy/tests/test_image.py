"""The container image (Containerfile, scripts/build-image.sh): FROM scratch with only the
static server in it, a non-root user, a read-only root; Triton's client gets the library's
probabilities through it; `podman stop` (SIGTERM) answers every request in flight, exits 0
and takes well under its 10 s grace."""

import concurrent.futures
import json
import subprocess
import tarfile
import time
import uuid

import numpy as np
import tritonclient.http as http

from conftest import free_port, library_probabilities, metric, need, poll, sample_images, wait_ready

# Image size goal (bytes), with both shipped models in the binary.
SIZE_GOAL = 12 * 1000 * 1000
# How long podman stop waits before SIGKILL.
STOP_GRACE_S = 10
# Requests in flight when the stop is sent: each of BATCH images, one engine worker.
IN_FLIGHT = 24
BATCH = 64


def podman(*args, check=True):
    return subprocess.run([need("podman"), *args], check=check, capture_output=True, text=True)


def test_image_holds_only_the_static_server(image, scratch):
    tag, binary = image
    config = json.loads(podman("image", "inspect", tag).stdout)[0]
    assert config["Config"]["User"] == "65534:65534"
    assert config["Config"]["Entrypoint"] == ["/cifar10", "serve", "--addr", "0.0.0.0:8080"]
    size = config["Size"]
    print(f"\nimage {tag}: {size} bytes ({size / 1e6:.1f} MB); binary {binary.stat().st_size} bytes unstripped")
    assert size < SIZE_GOAL, f"image is {size} bytes, over the {SIZE_GOAL} goal"
    # The root filesystem: one file, the server (the models are inside it, not beside it).
    name = f"cifar10-files-{uuid.uuid4().hex[:8]}"
    podman("create", "--name", name, tag)
    try:
        archive = scratch / "rootfs.tar"
        podman("export", "--output", str(archive), name)
        with tarfile.open(archive) as tar:
            files = [m for m in tar.getmembers() if m.isfile() or m.issym() or m.islnk()]
        assert [m.name.lstrip("./") for m in files] == ["cifar10"], [m.name for m in files]
        assert files[0].mode & 0o222 == 0, "the binary should not be writable"
    finally:
        podman("rm", "--force", name, check=False)


def test_tritons_client_and_a_clean_stop(image, scratch):
    tag, binary = image
    port = free_port()
    name = f"cifar10-serve-{uuid.uuid4().hex[:8]}"
    # Nothing writable: read-only root, no capabilities; one engine worker so that requests
    # queue up and are in flight when the stop comes.
    podman(
        "run", "--detach", "--name", name, "--read-only", "--cap-drop=all", "--publish", f"127.0.0.1:{port}:8080",
        tag, "--workers", "1", "--max-queue", str(2 * IN_FLIGHT * BATCH), "--quiet",
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_ready(base)
        url = f"127.0.0.1:{port}"

        images, records = sample_images(8)
        client = http.InferenceServerClient(url=url)
        inp = http.InferInput("image", list(images.shape), "UINT8")
        inp.set_data_from_numpy(images)
        got = client.infer("cifar10", [inp]).as_numpy("probabilities")
        want = library_probabilities(binary, records, scratch)
        np.testing.assert_array_equal(got, want)

        # Requests in flight, then SIGTERM: every one is answered, the server exits 0.
        many, _ = sample_images(BATCH)

        def infer_many(_):
            c = http.InferenceServerClient(url=url, network_timeout=60)
            i = http.InferInput("image", list(many.shape), "UINT8")
            i.set_data_from_numpy(many)
            return c.infer("cifar10", [i]).as_numpy("label")

        with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
            futures = [pool.submit(infer_many, n) for n in range(IN_FLIGHT)]
            poll("requests in flight", lambda: metric(base, "cifar10_requests_in_flight") >= IN_FLIGHT / 2)
            in_flight = metric(base, "cifar10_requests_in_flight")
            queued = metric(base, "cifar10_queue_depth_images")
            started = time.monotonic()
            stop = podman("stop", "--time", str(STOP_GRACE_S), name, check=False)
            stop_s = time.monotonic() - started
            labels = [f.result() for f in futures]
        print(f"\npodman stop with {in_flight:.0f} requests in flight ({queued:.0f} images queued): {stop_s:.2f} s")
        assert stop.returncode == 0, stop.stderr
        assert queued > 0, "no images were queued when the stop was sent: the test did not test a stop under load"
        want_labels = library_probabilities(binary, sample_images(BATCH)[1], scratch).argmax(axis=1)
        for answer in labels:
            np.testing.assert_array_equal(answer, want_labels)
        exit_code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert exit_code == "0", f"the server exited with {exit_code} (137 is SIGKILL after the grace)"
        assert stop_s < STOP_GRACE_S, f"stop took {stop_s:.1f} s"
        logs = podman("logs", name).stderr
        assert "stopped" in logs, logs
    finally:
        podman("rm", "--force", name, check=False)
