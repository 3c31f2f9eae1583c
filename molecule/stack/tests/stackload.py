"""Bounded HTTPS load through the whole stack (Nginx -> Varnish -> Gunicorn), run
inside a test container against 127.0.0.1:443 while the test deploys, rolls back
or breaks something from the controller.

    python3 stackload.py OUT THREADS INTERVAL MIN_REQUESTS MAX_SECONDS PATH [PATH ...]

THREADS threads (one keep-alive connection each, reopened after an error) cycle
through the PATHs, each starting a request at most every INTERVAL seconds, until
the file OUT.stop exists AND at least MIN_REQUESTS have completed, or MAX_SECONDS
have passed, whichever comes first. OUT.started is
written once the first request has answered. OUT receives one JSON document:
every request as [start, end, path, status, release, error] (monotonic seconds;
status 0 and an error text for a socket error; release from /version bodies).
"""

import http.client
import json
import os
import ssl
import sys
import threading
import time

OUT, THREADS, INTERVAL = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
MIN_REQUESTS, MAX_SECONDS = int(sys.argv[4]), float(sys.argv[5])
PATHS = sys.argv[6:]
STOP = OUT + ".stop"
DEADLINE = time.monotonic() + MAX_SECONDS
CONTEXT = ssl._create_unverified_context()  # the stack's self-signed certificate
results = []
lock = threading.Lock()
started = threading.Event()


def finished():
    if time.monotonic() >= DEADLINE:
        return True
    with lock:
        done = len(results)
    return done >= MIN_REQUESTS and os.path.exists(STOP)


def worker(offset):
    conn = None
    n = offset
    while not finished():
        path = PATHS[n % len(PATHS)]
        n += 1
        begin = time.monotonic()
        status, release, error = 0, "", ""
        try:
            if conn is None:
                conn = http.client.HTTPSConnection("127.0.0.1", 443, timeout=10, context=CONTEXT)
            conn.request("GET", path, headers={"Host": "localhost"})
            response = conn.getresponse()
            body = response.read()
            status = response.status
            if path == "/version" and status == 200:
                release = json.loads(body)["release"]
            if response.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except Exception as exc:  # noqa: BLE001 - every failure is a result
            error = f"{type(exc).__name__}: {exc}"
            if conn is not None:
                conn.close()
            conn = None
        end = time.monotonic()
        with lock:
            results.append([begin, end, path, status, release, error])
        started.set()
        time.sleep(max(0.0, begin + INTERVAL - end))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
for thread in threads:
    thread.start()
started.wait(MAX_SECONDS)
with open(OUT + ".started", "w") as handle:
    handle.write("started\n")
for thread in threads:
    thread.join()
with open(OUT + ".tmp", "w") as handle:
    json.dump({"threads": THREADS, "results": results}, handle)
os.replace(OUT + ".tmp", OUT)
