"""A stand-in for Django behind Nginx in the tests: answers every request with a
marker line and the request's headers as JSON, on 127.0.0.1:8000, with keep-alive."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self, body_wanted=True):
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = ("prodready-echo-backend\n" + json.dumps(
            {"method": self.command, "path": self.path, "headers": dict(self.headers.items())},
            indent=1) + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body_wanted:
            self.wfile.write(body)

    def do_GET(self):
        self._answer()

    def do_POST(self):
        self._answer()

    def do_HEAD(self):
        self._answer(body_wanted=False)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", 8000), Echo).serve_forever()
