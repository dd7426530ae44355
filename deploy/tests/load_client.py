"""A bounded load for deploy/tests/test_replicas.py, run as its own process: COUNT inference
requests (one image each, JSON) over CONCURRENCY keep-alive connections to URL, each with a
unique X-Request-Id. Prints one JSON object: the ids sent, and every failure (a connection
error or a status other than 200), with its id and reason.

    python load_client.py HOST:PORT COUNT CONCURRENCY
"""

import http.client
import json
import sys
import threading

host, port = sys.argv[1].rsplit(":", 1)
count, concurrency = int(sys.argv[2]), int(sys.argv[3])
image = [(i * 7) % 256 for i in range(32 * 32 * 3)]
body = json.dumps(
    {"inputs": [{"name": "image", "shape": [1, 32, 32, 3], "datatype": "UINT8", "data": image}]}
).encode()
lock = threading.Lock()
next_id = 0
sent, failures = [], []


def worker():
    global next_id
    conn = None
    while True:
        with lock:
            if next_id == count:
                break
            request_id = f"r{next_id:05d}"
            next_id += 1
            sent.append(request_id)
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            conn.request(
                "POST",
                "/v2/models/cifar10/infer",
                body,
                {"Content-Type": "application/json", "X-Request-Id": request_id},
            )
            response = conn.getresponse()
            answer = response.read()
            if response.status != 200 or b'"probabilities"' not in answer:
                with lock:
                    failures.append([request_id, f"{response.status}: {answer[:200]!r}"])
        except (OSError, http.client.HTTPException) as e:
            with lock:
                failures.append([request_id, repr(e)])
            if conn is not None:
                conn.close()
            conn = None


threads = [threading.Thread(target=worker) for _ in range(concurrency)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"sent": sent, "failures": failures}))
