"""The server's own CPU cost per one-image binary request (`cifar10 serve`, KServe v2 with
Triton's binary extension), with the load generator in this separate process.

    python benches/serve_overhead.py target/release/cifar10 models/cifar10.safetensors [REQUESTS]

It starts the server (1 engine worker, 1 thread, no request log), sends REQUESTS one-image
requests one after another over one keep-alive connection, and reads the server process's
CPU time (utime + stime from /proc/PID/stat) before and after, and prints it per request.
The engine's share is measured apart, with the engine alone (README:
`/usr/bin/time cifar10 eval --threads 1 --batch-size 1` on the 1,000-image sample); the
server's own overhead per request is the difference.
"""

import http.client
import json
import os
import re
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def start_server(binary, model):
    server = subprocess.Popen(
        [binary, "serve", "--model", model, "--addr", "127.0.0.1:0", "--workers", "1", "--threads", "1",
         "--max-wait-ms", "0", "--quiet"],
        stderr=subprocess.PIPE, text=True)
    for line in server.stderr:
        match = re.search(r"http://([0-9.]+):(\d+)", line)
        if match:
            return server, match.group(1), int(match.group(2))
    raise SystemExit("the server did not say where it listens")


def request_body(image):
    header = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1, 32, 32, 3],
                                     "parameters": {"binary_data_size": len(image)}}],
                         "outputs": [{"name": "label"}]}).encode()
    return header, header + image


def main():
    binary, model = sys.argv[1], sys.argv[2]
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 5000
    server, host, port = start_server(binary, model)
    try:
        connection = http.client.HTTPConnection(host, port)
        image = bytes((i * 7) % 256 for i in range(32 * 32 * 3))
        header, body = request_body(image)
        headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
        def send(n):
            for _ in range(n):
                connection.request("POST", "/v2/models/cifar10/infer", body, headers)
                response = connection.getresponse()
                response.read()
                assert response.status == 200, response.status
        send(200)  # warm-up
        before, start = cpu_seconds(server.pid), time.perf_counter()
        send(requests)
        server_cpu, wall = cpu_seconds(server.pid) - before, time.perf_counter() - start
    finally:
        server.terminate()
        server.wait()
    print(f"server: {requests} requests in {wall:.2f} s, {1e6 * server_cpu / requests:.0f} µs CPU per request")
    return server_cpu / requests


if __name__ == "__main__":
    main()
