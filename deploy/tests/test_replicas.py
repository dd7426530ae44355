"""Three `cifar10 serve` replicas behind nginx (Debian's, started here with its own config on
loopback) that retries the next replica on an error or a timeout, POSTs included. Under a
bounded load from another process one replica is killed (SIGKILL) and one stopped (SIGTERM):
the client sees no failure, and nginx's access log holds one line per request sent, with each
try's replica and status (a retried request names both)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

from conftest import free_port, need, poll, wait_ready

REQUESTS = 900
CONCURRENCY = 8
LOG_FORMAT = '$http_x_request_id $request_method $uri $status "$upstream_addr" "$upstream_status"'

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    log_format tries '{log_format}';
    access_log {dir}/access.log tries;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_body_buffer_size 1m;
    upstream replicas {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            # The replicas answer loopback names only (--allowed-hosts auto on 127.0.0.1):
            # pass the client's Host on, not the upstream's name.
            proxy_set_header Host $host;
            # Inference has no side effects: retry POSTs on the next replica too.
            proxy_next_upstream error timeout non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 30s;
        }}
    }}
}}
"""


def start_replica(binary):
    """A replica on a free loopback port; returns (process, "127.0.0.1:PORT")."""
    process = subprocess.Popen(
        [str(binary), "serve", "--addr", "127.0.0.1:0", "--workers", "1", "--quiet"],
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stderr.readline()
    match = re.search(r"on http://(127\.0\.0\.1:\d+)", line)
    assert match, f"no address in the start-up line: {line!r}"
    return process, match.group(1)


def logged(access_log):
    return access_log.read_text().splitlines() if access_log.exists() else []


def test_replicas_behind_nginx_lose_no_request(image, scratch):
    _, binary = image
    nginx = need("nginx")
    os.chmod(scratch, 0o755)  # nginx's workers run as another user when started as root
    replicas, processes, proxy = [], [], None
    try:
        for _ in range(3):
            process, addr = start_replica(binary)
            processes.append(process)
            replicas.append((process, addr))
            wait_ready(f"http://{addr}")
        port = free_port()
        servers = "\n".join(f"        server {addr} max_fails=1 fail_timeout=30s;" for _, addr in replicas)
        conf = scratch / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=scratch, log_format=LOG_FORMAT, servers=servers, port=port))
        # Its own session: the cleanup kills its workers with it.
        proxy = subprocess.Popen(
            [nginx, "-p", str(scratch), "-c", str(conf), "-e", str(scratch / "error.log")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        processes.append(proxy)
        wait_ready(f"http://127.0.0.1:{port}")
        access_log = scratch / "access.log"

        started = time.monotonic()
        client = subprocess.Popen(
            [sys.executable, str(os.path.join(os.path.dirname(__file__), "load_client.py")),
             f"127.0.0.1:{port}", str(REQUESTS), str(CONCURRENCY)],
            stdout=subprocess.PIPE,
            text=True,
        )
        processes.append(client)
        (killed, killed_addr), (stopped, stopped_addr), (_, kept_addr) = replicas
        poll("a third of the load", lambda: len(logged(access_log)) >= REQUESTS // 3, timeout=60)
        killed.send_signal(signal.SIGKILL)
        poll("two thirds of the load", lambda: len(logged(access_log)) >= 2 * REQUESTS // 3, timeout=60)
        stopped.send_signal(signal.SIGTERM)
        assert stopped.wait(timeout=10) == 0, "the replica stopped with SIGTERM did not exit 0"
        out, _ = client.communicate(timeout=120)
        elapsed = time.monotonic() - started
        assert client.returncode == 0, "the load client failed"
        result = json.loads(out)
        assert killed.wait(timeout=10) == -signal.SIGKILL

        assert result["failures"] == [], f"{len(result['failures'])} failed: {result['failures'][:5]}"
        assert len(result["sent"]) == REQUESTS

        # nginx writes a request's line once the answer is sent: stop it (gracefully, so it
        # finishes every line) before reading the log.
        proxy.send_signal(signal.SIGQUIT)
        assert proxy.wait(timeout=10) == 0, proxy.stderr.read()
        entries = {}
        for line in logged(access_log):
            match = re.fullmatch(r'(\S+) (\S+) (\S+) (\d+) "([^"]*)" "([^"]*)"', line)
            assert match, f"unexpected access log line: {line!r}"
            request_id, method, uri, status, addrs, statuses = match.groups()
            if (method, uri) == ("GET", "/v2/health/ready"):
                continue  # the readiness check before the load
            assert (method, uri) == ("POST", "/v2/models/cifar10/infer"), line
            assert request_id not in entries, f"{request_id} logged twice"
            entries[request_id] = (int(status), addrs.split(", "), statuses.split(", "))
        missing, extra = set(result["sent"]) - set(entries), set(entries) - set(result["sent"])
        assert not missing and not extra, f"not in the access log: {sorted(missing)[:5]}; not sent: {sorted(extra)[:5]}"
        retried = {rid: e for rid, e in entries.items() if len(e[1]) > 1}
        for request_id, (status, addrs, statuses) in entries.items():
            assert status == 200 and statuses[-1] == "200", (request_id, status, addrs, statuses)
            assert len(addrs) == len(statuses), (request_id, addrs, statuses)
        served = {addr: sum(e[1][-1] == addr for e in entries.values()) for _, addr in replicas}
        print(
            f"\n{REQUESTS} requests through nginx in {elapsed:.1f} s, none failed; answered by {served}; "
            f"{len(retried)} retried, e.g. {dict(list(retried.items())[:3])}"
        )
        assert retried, "no request was retried: the kill did not land mid-load"
        assert any(killed_addr in addrs[:-1] for _, addrs, _ in retried.values()), "no retry away from the killed replica"
        assert served[kept_addr] > 0 and served[stopped_addr] > 0
    finally:
        if proxy is not None:
            try:
                os.killpg(proxy.pid, signal.SIGKILL)  # the master and any worker left
            except ProcessLookupError:
                pass
        for process in processes:
            if process.poll() is None:
                process.kill()
            process.wait()
