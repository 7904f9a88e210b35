"""Keep-alive HTTP and gRPC clients against a sleepy Service for a while: answers per model version
and failed requests, as JSON (docs/real-node.md, "First observations"). Run it in the real node's
client network namespace:

    nsenter --net=/run/netns/tritonop-client<k> python scripts/realnode_clients.py <ClusterIP> <seconds>

4 threads each keep one HTTP connection (re-opened only after an error) and 4 threads each hold
one gRPC channel."""

import collections
import http.client
import json
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as grpcclient

host, seconds = sys.argv[1], float(sys.argv[2])
body = json.dumps({"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
results = {"http": collections.Counter(), "grpc": collections.Counter()}
errors = {"http": [], "grpc": []}
stop = time.monotonic() + seconds


def http_client():
    conn = None
    while time.monotonic() < stop:
        try:
            if conn is None:
                conn = http.client.HTTPConnection(host, 8000, timeout=10)
                results["http"]["connections"] += 1
            conn.request("POST", "/v2/models/sleepy/infer", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            data = r.read()
            if r.status != 200:
                errors["http"].append(f"{r.status} {data[:120]!r}")
                continue
            results["http"][f"v{json.loads(data)['outputs'][1]['data'][0]}"] += 1
        except Exception as e:
            errors["http"].append(repr(e)[:160])
            conn = None
            time.sleep(0.05)


def grpc_client():
    c = grpcclient.InferenceServerClient(f"{host}:8001")
    t = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    t.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.float32))
    while time.monotonic() < stop:
        try:
            r = c.infer("sleepy", [t])
            results["grpc"][f"v{int(r.as_numpy('VERSION')[0][0])}"] += 1
        except Exception as e:
            errors["grpc"].append((type(e).__name__ + ": " + str(e))[:200])
            time.sleep(0.05)


threads = [threading.Thread(target=f) for f in [http_client] * 4 + [grpc_client] * 4]
for th in threads:
    th.start()
for th in threads:
    th.join()
print(
    json.dumps(
        {
            "results": results,
            "failed": {k: len(v) for k, v in errors.items()},
            "first_errors": {k: v[:3] for k, v in errors.items()},
        },
        indent=1,
    )
)
