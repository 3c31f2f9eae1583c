"""Bounded HTTP load against one Gunicorn address, run inside a test container.

    python3 loadgen.py TARGET THREADS REQUESTS ACTION_AFTER ACTION

TARGET is a unix socket path or 127.0.0.1:PORT. THREADS threads send requests (GET
/who, one connection per request, 10 s timeout each); once ACTION_AFTER requests have
completed, the shell command ACTION runs. Each thread stops once it has sent REQUESTS
requests and the action ended half a second ago. Everything stops after 60 s at most. Prints one JSON document: every request as
[start, end, status, body] (monotonic seconds; the body is "release instance master-pid") or [start, end, "error", message],
and the action's start and end times, exit code and output.
"""

import json
import socket
import subprocess
import sys
import threading
import time

DEADLINE = time.monotonic() + 60.0
TARGET, THREADS, REQUESTS, ACTION_AFTER, ACTION = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
results = []
lock = threading.Lock()
action_done = threading.Event()
action_end = [0.0]


def connect():
    if TARGET.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(TARGET)
        return sock
    host, port = TARGET.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def one_request():
    start = time.monotonic()
    try:
        with connect() as sock:
            sock.sendall(b"GET /who HTTP/1.0\r\nHost: localhost\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return [start, time.monotonic(), status, body.decode()]
    except (OSError, ValueError, IndexError) as error:
        return [start, time.monotonic(), "error", repr(error)]


def worker():
    sent = 0
    while time.monotonic() < DEADLINE:
        if sent >= REQUESTS and action_done.is_set() and time.monotonic() > action_end[0] + 0.5:
            break
        sent += 1
        result = one_request()
        with lock:
            results.append(result)
        time.sleep(0.01)


threads = [threading.Thread(target=worker) for _ in range(THREADS)]
for thread in threads:
    thread.start()
while len(results) < ACTION_AFTER and time.monotonic() < DEADLINE and any(t.is_alive() for t in threads):
    time.sleep(0.01)
action_start = time.monotonic()
action = subprocess.run(ACTION, shell=True, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
action_end[0] = time.monotonic()
action_done.set()
for thread in threads:
    thread.join(max(0.0, DEADLINE - time.monotonic()))
with lock:
    print(json.dumps({"results": results, "action": [action_start, action_end[0], action.returncode, action.stdout]}))
