"""The server's own CPU cost per one-image binary request (`cifar10 serve`, KServe v2 with
Triton's binary extension), with the load generator in this separate process.

    python benches/serve_overhead.py target/release/cifar10 models/cifar10.safetensors [REQUESTS [FLAG...]]

It starts the server (1 engine worker, 1 thread, no batching wait, no request log; FLAGs
are added to its command line), sends REQUESTS one-image requests one after another over
one keep-alive connection, and reads, before and after, the server process's CPU time
(utime + stime of /proc/PID/stat) and the engine's (`cifar10_engine_cpu_seconds_total` on
its /metrics: each engine call timed with its thread's CPU clock). Per request it prints
both and their difference: what the server itself costs around the engine; then the CPU of
each group of the server's threads by name (/proc/PID/task/*/schedstat, in nanoseconds),
with how often per request its threads went to sleep (voluntary context switches, each a
wake-up later: a count that, unlike CPU time, a busy machine hardly changes): the engine workers' share beyond the
engine calls is hand-off (waking, sleeping), the HTTP threads' is everything else.
"""

import http.client
import json
import os
import re
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def process_cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu(pid):
    """(CPU seconds, times gone to sleep) of the process's live threads, summed by name with
    digits dropped (`cifar10-engine-0` and `cifar10-engine-1` are one group, `cifar10-engine`)."""
    groups = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = re.sub(r"[-_\d]+$", "", f.read().strip())
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                cpu = int(f.read().split()[0]) / 1e9
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                sleeps = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches:"))
        except FileNotFoundError:  # the thread ended meanwhile
            continue
        total = groups.get(name, (0.0, 0))
        groups[name] = (total[0] + cpu, total[1] + sleeps)
    return groups


def engine_cpu(connection):
    connection.request("GET", "/metrics")
    response = connection.getresponse()
    text = response.read().decode()
    match = re.search(r"^cifar10_engine_cpu_seconds_total (\S+)$", text, re.MULTILINE)
    if response.status != 200 or not match:
        raise SystemExit(f"/metrics has no cifar10_engine_cpu_seconds_total (status {response.status})")
    return float(match.group(1))


def start_server(binary, model, flags):
    server = subprocess.Popen(
        [binary, "serve", "--model", model, "--addr", "127.0.0.1:0", "--workers", "1", "--threads", "1",
         "--max-wait-ms", "0", "--quiet", *flags],
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
    server, host, port = start_server(binary, model, sys.argv[4:])
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
        # The process's window holds the engine's (each /metrics read costs the server a
        # little CPU, counted as its own: negligible over thousands of requests).
        process_before, threads_before = process_cpu(server.pid), thread_cpu(server.pid)
        engine_before, start = engine_cpu(connection), time.perf_counter()
        send(requests)
        wall, engine = time.perf_counter() - start, engine_cpu(connection) - engine_before
        process, threads = process_cpu(server.pid) - process_before, thread_cpu(server.pid)
    finally:
        server.terminate()
        server.wait()
    per = lambda seconds: f"{1e6 * seconds / requests:.0f} µs"
    print(f"server: {requests} requests in {wall:.2f} s; CPU per request: process {per(process)}, "
          f"engine {per(engine)}, server's own {per(process - engine)}")
    groups = []
    for name, (cpu, sleeps) in threads.items():
        cpu_before, sleeps_before = threads_before.get(name, (0.0, 0))
        groups.append((cpu - cpu_before, (sleeps - sleeps_before) / requests, name))
    print("  by thread: " + ", ".join(f"{name} {per(cpu)} ({sleeps:.2f} sleeps)"
                                      for cpu, sleeps, name in sorted(groups, reverse=True) if cpu > 0))
    return (process - engine) / requests


if __name__ == "__main__":
    main()
