"""Bounded HTTPS load on a test container's own Nginx (127.0.0.1:443), or on the address
STACKLOAD_ADDRESS with the Host header STACKLOAD_HOST (localhost), run inside a test
container while the test deploys, rolls back, renews a certificate or breaks something
from the controller (prodready_testinfra.under_load starts it).

    python3 stackload.py OUT THREADS INTERVAL MIN_REQUESTS MAX_SECONDS PATH [PATH ...]

THREADS threads (one keep-alive connection each, reopened after an error) cycle
through the PATHs, each starting a request at most every INTERVAL seconds, until
the file OUT.stop exists AND at least MIN_REQUESTS have completed, or MAX_SECONDS
have passed, whichever comes first. OUT.started is
written once the first request has answered. OUT receives one JSON document:
every request as [start, end, path, status, release, error, retried, instance, app_host]
(monotonic seconds; status 0 and an error text for a socket error; release from /version
bodies, instance, the Gunicorn instance that answered, as "colour:master-pid", and app_host
the host name of the app server that answered;
retried true when a kept-alive connection closed under the request and it was sent again
on a new one, as browsers do; a second failure, or one on a new connection, is an error).
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
ADDRESS = os.environ.get("STACKLOAD_ADDRESS", "127.0.0.1")
HOST = os.environ.get("STACKLOAD_HOST", "localhost")
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


def send(conn, path):
    """One request on conn: (response, release, instance, app host)."""
    conn.request("GET", path, headers={"Host": HOST})
    response = conn.getresponse()
    body = response.read()
    if path.startswith("/version") and response.status == 200:
        answer = json.loads(body)
        return (response, answer["release"], f"{answer.get('instance', '')}:{answer.get('master_pid', '')}",
                answer.get("host", ""))
    return response, "", "", ""


def worker(offset):
    conn, reused = None, False
    n = offset
    while not finished():
        path = PATHS[n % len(PATHS)]
        n += 1
        begin = time.monotonic()
        status, release, instance, app_host, error, retried = 0, "", "", "", "", False
        try:
            if conn is None:
                conn, reused = http.client.HTTPSConnection(ADDRESS, 443, timeout=10, context=CONTEXT), False
            try:
                response, release, instance, app_host = send(conn, path)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed as the request left (Nginx
                # closes idle ones at a reload): sent again once on a new connection, as
                # browsers do (RFC 9112, 9.3.1). A fresh connection's failure counts.
                if not reused:
                    raise
                conn.close()
                conn, retried = http.client.HTTPSConnection(ADDRESS, 443, timeout=10, context=CONTEXT), True
                response, release, instance, app_host = send(conn, path)
            status, reused = response.status, True
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
            results.append([begin, end, path, status, release, error, retried, instance, app_host])
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
