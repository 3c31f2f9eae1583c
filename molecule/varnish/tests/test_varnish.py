"""What Django relies on from the varnish role, checked with real requests (curl on the
host, against 127.0.0.1) and the Django stand-in of prepare.yml on 127.0.0.1:8000."""

import json
import time
import uuid

import pytest
from prodready_testinfra import assert_running, ipv4_address, molecule_hosts, wait_for_port

# The values converge.yml gives the role.
PORT = 6081
ADMIN_PORT = 6082
BACKEND_PORT = 8000
STUB = "molecule-django-stub"


def curl(host, path, *options, address="127.0.0.1"):
    """Status, headers (lower-case names) and body of one request from the host."""
    result = host.run(f"curl -sS --max-time 10 -D /dev/stderr {' '.join(options)} 'http://{address}:{PORT}{path}'")
    assert result.rc == 0, f"curl {path} failed: {result.stderr}"
    lines = result.stderr.replace("\r", "").strip().split("\n\n")[-1].splitlines()
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, result.stdout


def page(host, path, *options):
    """X-Cache and the stand-in's JSON answer (what it saw, and its request counter)."""
    status, headers, body = curl(host, path, *options)
    assert status == 200, body
    return headers["x-cache"], json.loads(body)


def unique(prefix="/page"):
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def test_services_running(host):
    assert_running(host, "varnish")
    assert_running(host, STUB)
    assert "Child in state running" in host.check_output("varnishadm status")


def test_listens_only_where_configured(host):
    sockets = {line.split()[3] for line in host.check_output("ss -Hltnp").splitlines()
               if "varnishd" in line or "cache-main" in line}
    address = ipv4_address(host)
    assert sockets == {f"127.0.0.1:{PORT}", f"{address}:{PORT}", f"127.0.0.1:{ADMIN_PORT}"}


def test_vcl_compiles_and_secret_is_private(host):
    with host.sudo():
        check = host.run("varnishd -j none -n /tmp/molecule-vcl-check -C -f /etc/varnish/default.vcl")
    assert check.rc == 0, check.stderr[-2000:]
    secret = host.file("/etc/varnish/secret")
    assert secret.mode == 0o600 and secret.user == "root" and secret.group == "root"
    dropin = host.file("/etc/systemd/system/varnish.service.d/prodready.conf").content_string
    assert "-s malloc,64M" in dropin and f"-T 127.0.0.1:{ADMIN_PORT}" in dropin


def test_second_anonymous_get_is_a_hit(host):
    path = unique()
    first_cache, first = page(host, path)
    second_cache, second = page(host, path)
    assert (first_cache, second_cache) == ("MISS", "HIT")
    assert second["count"] == first["count"], "the hit must come from the cache, not the backend"


def test_tracking_cookies_and_parameters_do_not_split_the_cache(host):
    path = unique()
    cache, seen = page(host, f"{path}?utm_source=news&id=7&utm_medium=mail&gclid=x", "-H 'Cookie: _ga=GA1.2; theme=dark'")
    assert cache == "MISS"
    assert seen["path"] == f"{path}?id=7", "tracking parameters must not reach Django"
    assert seen["cookie"] == "", "an anonymous request reaches Django without cookies"
    assert page(host, f"{path}?id=7")[0] == "HIT"


@pytest.mark.parametrize("session", ["sessionid=abc", "__Secure-sessionid=abc", "__Host-messages=xyz"])
def test_session_cookie_is_never_cached(host, session):
    path = unique()
    page(host, path)  # an anonymous copy in the cache must not be served to a session
    answers = [page(host, path, f"-H 'Cookie: _ga=1; {session}'") for _ in range(3)]
    assert [cache for cache, _ in answers] == ["MISS"] * 3
    assert len({seen["count"] for _, seen in answers}) == 3, "each request reaches Django"
    assert answers[0][1]["cookie"] == session, "Django gets the session, not the tracking cookie"


def test_a_cookie_that_only_ends_like_the_session_is_cached(host):
    path = unique()
    assert [page(host, path, "-H 'Cookie: mysessionid=abc'")[0] for _ in range(2)] == ["MISS", "HIT"]


def test_post_passes_to_the_backend(host):
    path = unique("/form")
    answers = [page(host, path, "-X POST", "-H 'Cookie: csrftoken=t0k3n'", "--data 'a=1'") for _ in range(2)]
    assert [seen["method"] for _, seen in answers] == ["POST", "POST"]
    assert [cache for cache, _ in answers] == ["MISS", "MISS"]
    assert answers[0][1]["cookie"] == "csrftoken=t0k3n", "a POST keeps its CSRF cookie"
    assert answers[1][1]["count"] > answers[0][1]["count"]


@pytest.mark.parametrize("prefix", ["/admin/", "/accounts/"])
def test_pass_prefixes_are_never_cached(host, prefix):
    path = unique(prefix + "page")
    assert [page(host, path)[0] for _ in range(3)] == ["MISS"] * 3


def test_private_or_cookie_setting_pages_are_never_cached(host):
    path = unique("/private")
    answers = [curl(host, path) for _ in range(3)]
    assert [headers["x-cache"] for _, headers, _ in answers] == ["MISS"] * 3
    assert all("sessionid=new" in headers["set-cookie"] for _, headers, _ in answers)


@pytest.mark.parametrize("method", ["PURGE", "BAN"])
def test_purge_and_ban_from_localhost(host, method):
    path = unique()
    page(host, path)
    assert page(host, path)[0] == "HIT"
    status, _, body = curl(host, path, f"-X {method}")
    assert status == 200, body
    assert page(host, path)[0] == "MISS"


@pytest.mark.parametrize("method", ["PURGE", "BAN"])
def test_purge_and_ban_refused_outside_the_acl(host, method):
    path = unique()
    page(host, path)
    address = ipv4_address(host)
    others = [h for name, h in molecule_hosts().items() if ipv4_address(h) != address]
    assert others, "needs the scenario's second container"
    status, _, _ = curl(others[0], path, address=address)
    assert status == 200, "the other container reaches the cache"
    status, _, _ = curl(others[0], path, f"-X {method}", address=address)
    assert status == 403
    assert page(host, path)[0] == "HIT", "a refused purge leaves the page cached"


@pytest.mark.parametrize("method", ["PURGE", "BAN"])
def test_purge_and_ban_refused_through_a_proxy(host, method):
    """Nginx connects from 127.0.0.1 for every visitor and adds X-Forwarded-For."""
    path = unique()
    page(host, path)
    status, _, _ = curl(host, path, f"-X {method}", "-H 'X-Forwarded-For: 203.0.113.9'")
    assert status == 403
    assert page(host, path)[0] == "HIT"


def test_unknown_method_is_refused(host):
    status, _, _ = curl(host, "/", "-X FROB")
    assert status == 405


def test_reload_loads_the_vcl_and_keeps_the_cache(host):
    """What the role's handler does after a VCL change: Debian's varnishreload, no restart."""
    path = unique()
    page(host, path)
    main_pid = host.check_output("systemctl show -p MainPID --value varnish")
    active_before = host.check_output("varnishadm vcl.list | awk '$1 == \"active\" {print $NF}'")
    reload = host.run("systemctl reload varnish")
    assert reload.rc == 0, reload.stderr
    assert host.check_output("systemctl show -p MainPID --value varnish") == main_pid
    assert host.check_output("varnishadm vcl.list | awk '$1 == \"active\" {print $NF}'") != active_before
    assert page(host, path)[0] == "HIT"


def backend_health(host):
    lines = host.check_output("varnishadm backend.list").splitlines()
    return " ".join(line for line in lines if ".django" in line)


def wait_for_health(host, word, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if word in backend_health(host).split():
            return
        time.sleep(0.5)
    raise AssertionError(f"backend not {word} after {seconds}s: {backend_health(host)}")


def test_grace_serves_stale_pages_while_the_backend_is_sick(host):
    path = unique("/short")  # max-age=1
    page(host, path)
    try:
        host.check_output(f"systemctl stop {STUB}")
        wait_for_health(host, "sick")
        time.sleep(1.5)  # past the page's time to live
        status, headers, body = curl(host, path)
        assert status == 200, f"an expired page must be served in grace:\n{body}"
        assert headers["x-cache"] == "HIT" and int(headers["age"]) >= 1
        status, _, _ = curl(host, unique("/short"))
        assert status == 503, "a page never cached cannot be served without the backend"
    finally:
        host.run(f"systemctl start {STUB}")
        wait_for_port(host, BACKEND_PORT)
        wait_for_health(host, "healthy")
