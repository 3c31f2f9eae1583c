"""Certificates from an ACME CA (Pebble, in its own container), checked the way a browser
would: the chain each web host serves verifies against Pebble's root, which only this
test's client trusts. Then a renewal forced under load, the CA down for a renewal, a CA
that refuses a first issuance, and the CA back.

The tests run in file order and build on each other. The site's names resolve to the
Debian 13 host only (molecule.yml), so the Debian 12 host's challenges are answered by
its peer passing them on.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import testinfra
from prodready_testinfra import under_load

ROOT = Path(os.environ["MOLECULE_PROJECT_DIRECTORY"])
INVENTORY = Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent
CONVERGE = ROOT / "molecule" / "acme" / "converge.yml"
ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
# What the closing notes quote: the chain seen, the renewal's request counts.
FIGURES = ROOT / ".cache" / "logs" / "acme.jsonl"
NAMES = ["www.acme.test", "acme.test"]
WEB = ["acme-debian12", "acme-debian13"]
CERT = "/etc/nginx/tls/django.crt"
STATE = "/var/lib/prodready-acme/state.json"
ROOT_PEM = "/tmp/pebble-root.pem"

# Straight through docker exec (the containers are the scenario's own): a tenth of the
# time of testinfra's ansible backend per command, and these tests send many.
HOSTS = {name: testinfra.get_host(f"docker://{name}") for name in [*WEB, "acme-pebble"]}
PEBBLE = HOSTS["acme-pebble"]


def note(label: str, **values) -> None:
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a") as handle:
        handle.write(json.dumps({"test": label, **values}) + "\n")


def fetch_root() -> None:
    """Pebble's current root (a new one at each start), for the test client only."""
    PEBBLE.check_output(f"curl -sSk --max-time 10 https://localhost:15000/roots/0 -o {ROOT_PEM}")


def served(web: str, name: str = NAMES[0]) -> dict:
    """What the web host serves for name, seen from the Pebble container with Pebble's
    root as the only trust anchor: verify result, chain, serial, names."""
    out = PEBBLE.run(
        f"openssl s_client -connect {web}:443 -servername {name} -showcerts "
        f"-CAfile {ROOT_PEM} -verify_hostname {name} </dev/null 2>&1"
    ).stdout
    pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", out, re.S)
    assert pems, f"{web} served no certificate:\n{out[-2000:]}"
    leaf = PEBBLE.check_output(f"echo {shlex.quote(pems[0])} | openssl x509 -noout -serial -ext subjectAltName")
    verify = re.search(r"Verify return code: (\d+) \(([^)]*)\)", out)
    return {
        "verify": verify.group(0) if verify else "none",
        "verified": bool(verify) and verify.group(1) == "0",
        "chain": re.findall(r"^ *\d+ s:(.*)\n *i:(.*)$", out, re.M),
        "serial": re.search(r"serial=(\w+)", leaf).group(1),
        "names": sorted(re.findall(r"DNS:([^,\s]+)", leaf)),
    }


def https_get(web: str, path: str = "/static/site.css") -> str:
    """Status of a GET through the web host's TLS, verified against Pebble's root."""
    address = HOSTS[web].check_output("hostname -I").split()[0]
    return PEBBLE.check_output(
        f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 10 --cacert {ROOT_PEM} "
        f"--resolve {NAMES[0]}:443:{address} https://{NAMES[0]}{path}"
    )


def state(web: str) -> dict:
    return json.loads(HOSTS[web].check_output(f"cat {STATE}"))


def converge(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(INVENTORY), str(CONVERGE), *extra],
        cwd=ROOT, env=dict(os.environ, ANSIBLE_FORCE_COLOR="0", NO_COLOR="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=900, check=False,
    )


def flat(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


def pebble(action: str) -> None:
    PEBBLE.check_output(f"systemctl {action} pebble")
    if action in ("start", "restart"):
        deadline = time.monotonic() + 30
        while PEBBLE.run("curl -sk --max-time 2 -o /dev/null https://localhost:14000/dir").rc != 0:
            assert time.monotonic() < deadline, "Pebble did not come back"
            time.sleep(0.5)


@pytest.fixture(scope="module", autouse=True)
def pebble_root():
    fetch_root()


# --- issuance -------------------------------------------------------------------------
@pytest.mark.parametrize("web", WEB)
def test_each_web_host_serves_a_certificate_of_the_ca_for_every_name(web):
    seen = served(web)
    note("issued", host=web, **seen)
    assert seen["verified"], f"{web}: the chain does not verify against Pebble's root: {seen}"
    assert seen["names"] == sorted(NAMES)
    assert len(seen["chain"]) >= 2, f"{web} does not send the intermediate: {seen['chain']}"
    assert https_get(web) == "200"
    assert state(web)["result"] == "ok"


@pytest.mark.parametrize("web", WEB)
def test_keys_are_private_and_the_timer_is_scheduled(web):
    host = HOSTS[web]
    for key in ("/etc/nginx/tls/django.key", "/etc/nginx/tls/acme-account.key"):
        f = host.file(key)
        assert (f.user, f.mode) == ("root", 0o600), f"{key}: {f.user} {oct(f.mode)}"
    assert host.service("prodready-acme-renew.timer").is_enabled
    timers = host.check_output("systemctl list-timers --all prodready-acme-renew.timer --no-legend")
    assert "prodready-acme-renew.timer" in timers, timers


def test_a_challenge_for_the_other_host_is_passed_on_once():
    """The names lead to the Debian 13 host; a token only the Debian 12 host has is
    answered through it, and a token no host has is a 404, not a loop."""
    token = "prodready-test-token"
    path = f"/var/www/acme/.well-known/acme-challenge/{token}"
    HOSTS["acme-debian12"].check_output(f"echo only-on-debian12 > {path}")
    try:
        url = f"http://{NAMES[0]}/.well-known/acme-challenge"
        assert PEBBLE.check_output(f"curl -sS --max-time 10 {url}/{token}") == "only-on-debian12"
        missing = PEBBLE.check_output(f"curl -sS -o /dev/null -w '%{{http_code}}' --max-time 15 {url}/nobody-has-it")
        assert missing == "404"
    finally:
        HOSTS["acme-debian12"].run(f"rm -f {path}")


# --- renewal --------------------------------------------------------------------------
def reloads(host) -> int:
    return int(host.check_output("journalctl -u nginx --no-pager -o cat | grep -c '^Reloaded' || true"))


@pytest.mark.parametrize("web", WEB)
def test_a_renewal_that_is_not_due_changes_nothing_and_reloads_nothing(web):
    """What the timer does on most days: look, record the check, leave Nginx alone."""
    host = HOSTS[web]
    serial, count = served(web)["serial"], reloads(host)
    assert count > 0, "no reload of nginx in its journal: the count below would prove nothing"
    proc = host.run("prodready-acme-renew")
    assert proc.rc == 0, proc.stdout[-2000:]
    recorded = state(web)
    assert recorded["result"] == "ok" and recorded["changed"] is False, recorded
    assert served(web)["serial"] == serial and reloads(host) == count


def test_a_renewal_under_load_serves_a_new_serial_and_drops_nothing():
    web = "acme-debian12"
    host = HOSTS[web]
    before = served(web)["serial"]
    master = host.check_output("systemctl show -p MainPID --value nginx")

    def renew():
        return host.run("prodready-acme-renew --force")

    proc, results, t0, t1 = under_load(host, renew, "acme-renewal", ["/static/site.css"],
                                       threads=20, interval=0.02, min_requests=3000, max_seconds=180)
    assert proc.rc == 0, f"the renewal failed:\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}"
    failed = [r for r in results if r[5] or r[3] != 200]
    during = [r for r in results if r[0] < t1 and r[1] > t0]
    after = served(web)
    note("renewal under load", host=web, requests=len(results), requests_during_renewal=len(during),
         failed=len(failed), retried_on_a_new_connection=sum(1 for r in results if r[6]), renewal_seconds=round(t1 - t0, 1), serial_before=before, serial_after=after["serial"])
    assert not failed, f"{len(failed)} of {len(results)} requests failed, e.g. {failed[:3]}"
    assert len(results) >= 3000 and during, f"{len(results)} requests, {len(during)} during the renewal"
    assert after["serial"] != before and after["verified"], after
    assert host.check_output("systemctl show -p MainPID --value nginx") == master, "nginx was restarted, not reloaded"
    assert state(web)["changed"] is True


def test_with_the_ca_down_a_renewal_fails_loudly_and_the_old_certificate_serves():
    web = "acme-debian12"
    host = HOSTS[web]
    before = served(web)["serial"]
    pebble("stop")
    try:
        proc = host.run("prodready-acme-renew --force")
        assert proc.rc != 0
        assert "acme-pebble:14000" in proc.stdout and "www.acme.test" in proc.stdout, proc.stdout[-2000:]
        recorded = state(web)
        assert recorded["result"] == "failed" and "Connection refused" in recorded["error"], recorded
        assert served(web)["serial"] == before and https_get(web) == "200"

        # A converge that finds the renewal due reports the failure and goes on.
        proc = converge("--limit", web, "-e", "nginx_acme_renew_days=100000")
        output = flat(proc.stdout)
        assert proc.returncode == 0, output[-3000:]
        assert f"{web}: no new certificate from https://acme-pebble:14000/dir" in output, output[-3000:]
        assert "ignored=1" in output
        assert served(web)["serial"] == before and https_get(web) == "200"
        note("ca down", host=web, state=recorded)
    finally:
        pebble("start")
        fetch_root()


def test_a_first_issuance_the_ca_refuses_fails_naming_the_host_and_the_answer():
    """The CA answers, but not as a CA (a wrong directory URL: 404). An unreachable CA
    fails the same way, after community.crypto 3's retries (about 200 s), so the test
    takes the quick case."""
    web = "acme-debian13"
    host = HOSTS[web]
    host.check_output(f"rm -f {CERT}")
    wrong = "https://acme-pebble:14000/no-such-directory"
    proc = converge("--limit", web, "-e", f"nginx_acme_directory={wrong}")
    output = flat(proc.stdout)
    assert proc.returncode != 0
    message = re.search(rf"{web}: no new certificate from {wrong} for www.acme.test, acme.test: .*?state\.json", output)
    assert message and "404" in message.group(0) and "self-signed stand-in" in message.group(0), output[-3000:]
    note("first issuance refused", host=web, message=message.group(0))
    # Nginx still answers (with the stand-in) and did not stop.
    assert host.check_output("curl -sk -o /dev/null -w '%{http_code}' https://127.0.0.1/static/site.css") == "200"


def test_with_the_ca_back_a_converge_gets_certificates_again():
    """The Debian 13 host orders at the converge (it serves the stand-in). The Debian 12
    host loses its key (as if an admin removed it): the converge makes a new one, a
    stand-in for it so that Nginx reloads, and orders for the new key."""
    old_key = HOSTS["acme-debian12"].check_output("openssl pkey -in /etc/nginx/tls/django.key -pubout")
    HOSTS["acme-debian12"].check_output("rm -f /etc/nginx/tls/django.key")
    proc = converge()
    assert proc.returncode == 0, flat(proc.stdout)[-3000:]
    for web in WEB:
        seen = served(web)
        assert seen["verified"], f"{web}: {seen}"
        assert state(web)["result"] == "ok"
    assert HOSTS["acme-debian12"].check_output("openssl pkey -in /etc/nginx/tls/django.key -pubout") != old_key
