"""What a user of the common role relies on, checked on the converged hosts."""

import json
import os

import pytest
from prodready_testinfra import (
    assert_running,
    can_connect,
    ipv4_address,
    molecule_hosts,
    start_transient,
    wait_for_port,
)

PKI = os.path.join(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", ""), "pki")


@pytest.fixture(scope="module")
def pair():
    """Both hosts of the scenario: each one probes the other's firewall."""
    hosts = molecule_hosts()
    assert len(hosts) >= 2, "the common scenario needs two hosts"
    return list(hosts.values())[:2]


def test_firewall_policy_is_drop_with_the_configured_ports(host):
    ruleset = host.check_output("nft list table inet prodready")
    assert "type filter hook input priority filter; policy drop;" in ruleset
    assert 'iif "lo" accept' in ruleset
    assert "ct state established,related accept" in ruleset
    assert "tcp dport 22 accept" in ruleset
    assert "tcp dport 8080 accept" in ruleset
    assert "ip saddr 10.255.255.0/24 tcp dport 8443 accept" in ruleset
    assert "dport 8081" not in ruleset
    assert_running(host, "nftables")


@pytest.mark.parametrize("direction", [0, 1])
def test_firewall_from_another_container(pair, direction):
    target, probe = pair[direction], pair[1 - direction]
    address = ipv4_address(target)
    for port in (8080, 8081, 8443):
        start_transient(target, f"probe-listener-{port}", f"python3 -m http.server --bind 0.0.0.0 {port}")
        wait_for_port(target, port)  # loopback is always allowed
    assert can_connect(probe, address, 22), "SSH must stay reachable"
    assert can_connect(probe, address, 8080), "an allowed port must be reachable"
    assert not can_connect(probe, address, 8081), "a port that is not allowed must be dropped"
    assert not can_connect(probe, address, 8443), "a port allowed only from 10.255.255.0/24 must be dropped"


def test_extra_ca_is_trusted(host):
    """curl trusts a server whose certificate is signed by the extra CA, and only that one."""
    for name in ("ca", "untrusted"):
        for ext in ("pem", "key"):
            host.check_output("mkdir -p /tmp/pki")
            with open(os.path.join(PKI, f"server-{name}.{ext}")) as handle:
                content = handle.read()
            host.run(f"cat > /tmp/pki/server-{name}.{ext} <<'PEM'\n{content}PEM")
    start_transient(host, "tls-trusted", "openssl s_server -quiet -accept 9443 -www "
                    "-cert /tmp/pki/server-ca.pem -key /tmp/pki/server-ca.key")
    start_transient(host, "tls-untrusted", "openssl s_server -quiet -accept 9444 -www "
                    "-cert /tmp/pki/server-untrusted.pem -key /tmp/pki/server-untrusted.key")
    wait_for_port(host, 9443)
    wait_for_port(host, 9444)
    trusted = host.run("curl -sS -o /dev/null -w '%{http_code}' https://localhost:9443/")
    assert trusted.rc == 0 and trusted.stdout == "200", trusted.stderr
    untrusted = host.run("curl -sS -o /dev/null https://localhost:9444/")
    assert untrusted.rc == 60, "a certificate from an unknown CA must be refused"
    assert host.file("/usr/local/share/ca-certificates/prodready/prodready-test-ca.crt").mode == 0o644
    assert "cert = /etc/ssl/certs/ca-certificates.crt" in host.file("/etc/pip.conf").content_string


def test_timezone_and_locale(host):
    assert host.check_output("readlink /etc/localtime").endswith("/Europe/Paris")
    assert host.check_output("date +%Z") in ("CET", "CEST")
    assert "en_US.utf8" in host.check_output("locale -a").split()
    assert host.file("/etc/default/locale").content_string.strip() == "LANG=en_US.UTF-8"


def test_kernel_settings_hold(host):
    assert host.sysctl("net.core.somaxconn") == 8192
    assert host.sysctl("net.ipv4.tcp_max_syn_backlog") == 4096
    assert host.sysctl("net.ipv4.tcp_fin_timeout") == 15
    assert host.check_output("sysctl -n net.ipv4.ip_local_port_range").split() == ["10240", "65000"]
    assert "net.core.somaxconn=8192" in host.file("/etc/sysctl.d/60-prodready.conf").content_string


def test_unattended_security_upgrades_are_on(host):
    assert host.package("unattended-upgrades").is_installed
    dump = host.check_output("apt-config dump APT::Periodic")
    assert 'APT::Periodic::Unattended-Upgrade "1";' in dump
    assert 'APT::Periodic::Update-Package-Lists "1";' in dump
    origins = host.check_output("apt-config dump Unattended-Upgrade::Origins-Pattern")
    assert "label=Debian-Security" in origins


def test_time_sync_is_enabled(host):
    assert host.service("systemd-timesyncd").is_enabled


def test_sshd_is_hardened(host):
    assert_running(host, "ssh")
    effective = host.check_output("sshd -T").splitlines()
    assert "passwordauthentication no" in effective
    assert "permitrootlogin without-password" in effective
    assert "kbdinteractiveauthentication no" in effective


def test_admin_users(host):
    alice = host.user("alice")
    assert alice.exists and "sudo" in alice.groups and alice.shell == "/bin/bash"
    keys = host.file("/home/alice/.ssh/authorized_keys")
    assert keys.user == "alice" and keys.mode == 0o600
    assert "alice@example" in keys.content_string
    assert host.check_output("sudo -l -U alice").count("NOPASSWD: ALL") == 1
    assert not host.user("mallory").exists


def test_local_facts(host):
    facts = json.loads(host.file("/etc/ansible/facts.d/prodready_common.fact").content_string)
    assert facts["timezone"] == "Europe/Paris"
    assert facts["firewall_tcp_ports"] == [22, 8080, 8443]
    assert "prodready-test-ca" in facts["extra_ca_certificates"]
