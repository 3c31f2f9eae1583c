"""What Django relies on from the nginx role, checked with real requests (curl on the host)."""

import json
import re

import pytest
from prodready_testinfra import assert_running

# The values converge.yml gives the role.
FLAG = "/var/www/maintenance/on"
HASHED = "/static/css/site.0123456789ab.css"
PLAIN = "/static/css/plain.css"
KEY = "/etc/nginx/tls/django.key"
CERT = "/etc/nginx/tls/django.crt"


def curl(host, url, *options):
    """Status line, headers (lower-case names) and body of one request from the host."""
    result = host.run(
        "curl -4 -sS -k --max-time 10 -D /dev/stderr " + " ".join(options) + f" '{url}'")
    assert result.rc == 0, f"curl {url} failed: {result.stderr}"
    blocks = [b for b in result.stderr.replace("\r", "").split("\n\n") if b.startswith("HTTP/")]
    lines = blocks[-1].splitlines()
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.setdefault(name.strip().lower(), []).append(value.strip())
    return status, {k: ", ".join(v) for k, v in headers.items()}, result.stdout


@pytest.fixture(autouse=True)
def no_maintenance(host):
    with host.sudo():
        host.run(f"rm -f {FLAG}")
    yield
    with host.sudo():
        host.run(f"rm -f {FLAG}")


def test_service_running_and_config_valid(host):
    assert_running(host, "nginx")
    check = host.run("nginx -t")
    assert check.rc == 0, check.stderr
    assert not host.file("/etc/nginx/sites-enabled/default").exists


def test_http_redirects_to_https(host):
    status, headers, _ = curl(host, "http://localhost/some/page?x=1")
    assert status == 301
    assert headers["location"] == "https://localhost/some/page?x=1"


def test_https_proxies_to_the_backend_with_security_headers(host):
    status, headers, body = curl(host, "https://localhost/hello")
    assert status == 200, body
    assert body.startswith("prodready-echo-backend")
    assert headers["strict-transport-security"] == "max-age=63072000"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "same-origin"


def test_proxy_headers_reach_the_backend(host):
    _, _, body = curl(host, "https://localhost/headers", "-H 'X-Forwarded-For: 203.0.113.9'")
    seen = json.loads(body.split("\n", 1)[1])
    sent = {k.lower(): v for k, v in seen["headers"].items()}
    assert seen["path"] == "/headers"
    assert sent["host"] == "localhost"
    assert sent["x-forwarded-proto"] == "https"
    assert sent["x-real-ip"] == "127.0.0.1"
    assert sent["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"


def test_only_tls_12_and_13(host):
    for version, accepted in (("--tlsv1.2 --tls-max 1.2", True), ("--tlsv1.3", True), ("--tlsv1.1 --tls-max 1.1", False)):
        result = host.run(f"curl -4 -sk --max-time 10 -o /dev/null {version} https://localhost/")
        assert (result.rc == 0) == accepted, f"{version}: rc {result.rc} {result.stderr}"


def test_server_header_has_no_version(host):
    _, headers, _ = curl(host, "https://localhost/")
    assert headers["server"] == "nginx"


def test_hashed_static_file_is_cached_for_a_year_and_immutable(host):
    status, headers, body = curl(host, f"https://localhost{HASHED}")
    assert status == 200 and "color: #222" in body
    cache = headers["cache-control"]
    assert "immutable" in cache
    assert int(re.search(r"max-age=(\d+)", cache).group(1)) >= 31536000
    assert headers["x-content-type-options"] == "nosniff"  # security headers survive the location's add_header


def test_plain_static_file_has_a_short_cache_and_is_not_immutable(host):
    status, headers, _ = curl(host, f"https://localhost{PLAIN}")
    assert status == 200
    assert headers["cache-control"] == "public, max-age=600"
    assert "strict-transport-security" in headers


def test_media_is_served_from_disk(host):
    status, _, body = curl(host, "https://localhost/media/upload.txt")
    assert status == 200 and "color: #222" in body
    status, _, _ = curl(host, "https://localhost/media/missing.txt")
    assert status == 404


def test_gzip_for_css(host):
    _, headers, _ = curl(host, f"https://localhost{PLAIN}", "-H 'Accept-Encoding: gzip'", "-o /dev/null")
    assert headers.get("content-encoding") == "gzip"
    assert "Accept-Encoding" in headers.get("vary", "")
    _, headers, _ = curl(host, f"https://localhost{PLAIN}", "-o /dev/null")
    assert "content-encoding" not in headers


def test_request_body_limit(host):
    """client_max_body_size is 2m: 3 MB is refused with 413, 1 MB reaches the backend."""
    result = host.run("head -c 3000000 /dev/zero | curl -4 -sk -o /dev/null -w '%{http_code}' "
                      "-X POST --data-binary @- https://localhost/upload")
    assert result.stdout == "413"
    result = host.run("head -c 1000000 /dev/zero | curl -4 -sk -o /dev/null -w '%{http_code}' "
                      "-X POST --data-binary @- https://localhost/upload")
    assert result.stdout == "200"


def test_maintenance_mode(host):
    with host.sudo():
        host.check_output(f"touch {FLAG}")
    for method in ("", "-X POST -d x=1"):
        status, headers, body = curl(host, "https://localhost/anything", method)
        assert status == 503
        assert "Molecule maintenance in progress." in body
        assert headers["retry-after"] == "120"
        assert headers["content-type"].startswith("text/html")
    status, _, _ = curl(host, f"https://localhost{HASHED}")
    assert status == 200  # static files are still served
    with host.sudo():
        host.check_output(f"rm {FLAG}")
    status, _, body = curl(host, "https://localhost/anything")
    assert status == 200 and body.startswith("prodready-echo-backend")


def test_private_key_is_private(host):
    key = host.file(KEY)
    assert key.mode == 0o600 and key.user == "root"
    assert "PRIVATE KEY" in host.check_output(f"head -1 {KEY}")


def test_self_signed_certificate_names_the_site(host):
    text = host.check_output(f"openssl x509 -in {CERT} -noout -subject -ext subjectAltName")
    assert "CN=localhost" in text.replace(" ", "")
    assert "DNS:localhost" in text and "DNS:www.example.test" in text


def test_workers_run_as_www_data_and_listen(host):
    listening = host.check_output("ss -Hltnp")
    sockets = [line for line in listening.splitlines() if re.search(r":(80|443)\s", line)]
    addresses = {line.split()[3] for line in sockets}
    assert {"0.0.0.0:80", "0.0.0.0:443", "[::]:80", "[::]:443"} <= addresses, listening
    pids = {int(p) for line in sockets for p in re.findall(r'"nginx",pid=(\d+)', line)}
    users = {pid: host.check_output(f"ps -o user= -p {pid}").strip() for pid in pids}
    workers = [pid for pid in pids if "worker" in host.check_output(f"ps -o args= -p {pid}")]
    assert workers, f"no worker process among the listeners {users}"
    assert all(users[pid] == "www-data" for pid in workers), users
    masters = [pid for pid in pids if pid not in workers]
    assert all(users[pid] == "root" for pid in masters), users


def test_worker_connections_and_access_log_format(host):
    conf = host.file("/etc/nginx/nginx.conf").content_string
    assert re.search(r"^\s*worker_connections 512;", conf, re.M)
    curl(host, "https://localhost/logged")
    line = [entry for entry in host.file("/var/log/nginx/access.log").content_string.splitlines() if "/logged" in entry][-1]
    assert re.search(r"rt=\d+\.\d{3} urt=\d+\.\d{3}", line), line
