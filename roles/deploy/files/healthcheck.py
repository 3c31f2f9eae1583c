# Installed by the prodready.django.deploy role. Before the switch, the deploy runs it
# in a release, as the app user, through manage.py (Django set up, the app's environment):
#   PRODREADY_RELEASE=<release dir> PRODREADY_WSGI_APP=mysite.wsgi:application \
#   PRODREADY_HEALTHCHECK_PATH=/healthz PRODREADY_HEALTHCHECK_HOST=localhost PRODREADY_HEALTHCHECK_STATUS=200 \
#   /usr/local/sbin/<app>-manage shell -v 0 -c "exec(open('/usr/local/lib/prodready/healthcheck.py').read())"
# It calls the WSGI application Gunicorn would load, once, for the path, as Nginx
# forwards an HTTPS request for the host, and exits 1 with the answer unless its
# status is one of PRODREADY_HEALTHCHECK_STATUS (comma-separated).
import importlib
import io
import os
import sys

module_name, _, attribute = os.environ["PRODREADY_WSGI_APP"].partition(":")
application = getattr(importlib.import_module(module_name), attribute or "application")
url = os.environ["PRODREADY_HEALTHCHECK_PATH"]
host = os.environ["PRODREADY_HEALTHCHECK_HOST"]
expected = [int(code) for code in os.environ["PRODREADY_HEALTHCHECK_STATUS"].split(",")]
path, _, query = url.partition("?")
environ = {
    "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": query,
    "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_SOFTWARE": "prodready-deploy-check", "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": host, "HTTP_X_FORWARDED_PROTO": "https", "HTTP_USER_AGENT": "prodready deploy check",
    "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
    "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": True,
    "wsgi.run_once": True,
}
answer = {}
response = application(environ, lambda status, headers, exc_info=None: answer.update(status=status))
try:
    body = b"".join(response)
finally:
    getattr(response, "close", lambda: None)()
if int(answer["status"].split()[0]) not in expected:
    print(f"GET {url} answered {answer['status']}, expected one of {expected}; the answer began with: "
          + body[:800].decode("utf-8", "replace"), file=sys.stderr)
    sys.exit(1)
print(f"GET {url} answered {answer['status']}")
