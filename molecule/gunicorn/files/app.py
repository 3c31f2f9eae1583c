"""A tiny WSGI app for the gunicorn scenario: it answers the name of its release (and on
/who the instance that answered)."""

import os

RELEASE = os.path.basename(os.path.dirname(os.path.realpath(__file__)))


def _try_write(path):
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("probe\n")
        os.unlink(path)
        return "written"
    except OSError as error:
        return f"refused: {error.strerror}"


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/env":
        body = os.environ.get("DEMO_GREETING", "unset")
    elif path == "/cwd":
        body = os.getcwd()
    elif path == "/write":
        body = _try_write(environ.get("QUERY_STRING", ""))
    elif path == "/who":
        # The release, the instance (blue or green) and its master process.
        body = f"{RELEASE} {os.environ.get('PRODREADY_GUNICORN_INSTANCE', '')} {os.getppid()}"
    else:
        body = RELEASE
    data = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data)))])
    return [data]
