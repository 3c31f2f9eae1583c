"""A stand-in for Gunicorn and Django behind Varnish in the tests, on 127.0.0.1:8000.

Every answer is one JSON line with what the backend saw (method, path, Cookie header)
and a counter of the requests it has served, so a test can tell a cached answer (same
counter) from a fresh one. Paths:
  /healthz        200 "ok", never cached (the health probe)
  /private...     Cache-Control: private and a Set-Cookie, like a page for a logged-in user
  /short...       Cache-Control: public, max-age=1 (expires at once: for grace mode)
  anything else   Cache-Control: public, max-age=60
"""

import itertools
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COUNTER = itertools.count(1)


class Stub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        headers = {"Content-Type": "application/json"}
        if self.path == "/healthz":
            body = b"ok\n"
            headers["Cache-Control"] = "no-store"
        else:
            body = (json.dumps({
                "count": next(COUNTER),
                "method": self.command,
                "path": self.path,
                "cookie": self.headers.get("Cookie", ""),
            }) + "\n").encode()
            if self.path.startswith("/private"):
                headers["Cache-Control"] = "private"
                headers["Set-Cookie"] = "sessionid=new; HttpOnly; Path=/"
            elif self.path.startswith("/short"):
                headers["Cache-Control"] = "public, max-age=1"
            else:
                headers["Cache-Control"] = "public, max-age=60"
        self.send_response(200)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    ThreadingHTTPServer(("127.0.0.1", port), Stub).serve_forever()
