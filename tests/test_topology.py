"""The filters that read the layout from the inventory (plugins/filter/topology.py), with
hostvars as the inventory would give them. Every role's cross-tier default goes through
them; the cluster scenario proves the layout they give on real hosts."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins" / "filter"))
import topology  # noqa: E402

HOSTVARS = {
    "web1": {"prodready_private_address": "10.0.0.11"},
    "app1": {"ansible_host": "10.0.0.21"},
    "db1": {"prodready_private_address": "10.0.0.31"},
    "db2": {"prodready_private_address": "10.0.0.32", "postgresql_replication_role": "replica"},
    "public": {"ansible_host": "203.0.113.9"},
    "docs": {"prodready_private_address": "198.51.100.7"},
    "a": {"prodready_site": "a"},
    "b": {"prodready_site": "b"},
}


@pytest.mark.parametrize(("host", "local", "expected"), [
    ("web1", "app1", "10.0.0.11"),   # prodready_private_address
    ("app1", "web1", "10.0.0.21"),   # a private ansible_host
    ("app1", "app1", "127.0.0.1"),   # the host itself
    ("db1", None, "10.0.0.31"),      # no local host: always the private address
])
def test_private_address(host, local, expected):
    assert topology.private_address(host, HOSTVARS, local) == expected


@pytest.mark.parametrize(("host", "says"), [
    ("public", "prodready_private_address is not set for public, and its ansible_host (203.0.113.9)"),
    # Documentation and benchmark ranges are no one's private network (Python's is_private says they are).
    ("docs", "prodready_private_address of docs is '198.51.100.7'"),
    ("nowhere", "'nowhere' is not a host of the inventory"),
])
def test_private_address_refuses_what_is_not_a_private_address(host, says):
    with pytest.raises(AnsibleFilterError, match=says.replace("(", r"\(").replace(")", r"\)")):
        topology.private_address(host, HOSTVARS, "web1")


def test_db_primary():
    assert topology.db_primary(["db1", "db2"], HOSTVARS) == "db1"
    assert topology.db_primary([], HOSTVARS) is None
    with pytest.raises(AnsibleFilterError, match=r"the db group has 2 primaries \(db1, web1\)"):
        topology.db_primary(["db1", "web1"], HOSTVARS)
    with pytest.raises(AnsibleFilterError, match="the db group has no primary"):
        topology.db_primary(["db2"], HOSTVARS)


def test_sites_keep_their_tiers_apart():
    assert topology.same_site(["a", "b", "web1"], HOSTVARS, "a") == ["a"]
    assert topology.same_site(["web1", "app1", "a"], HOSTVARS, "app1") == ["web1", "app1"]
    assert topology.other_hosts(["web1", "app1", "a"], HOSTVARS, "app1") == ["web1"]
    assert topology.other_hosts(["a"], HOSTVARS, "a") == []


GROUPS = {"db": ["db1", "db2"], "web": ["web1"], "cache": ["db1"], "app": ["app1"]}


@pytest.mark.parametrize(("host", "expected"), [
    ("app1", {"node": 9100}),
    ("db1", {"node": 9100, "postgres": 9187, "redis": 9121}),
    ("web1", {"node": 9100, "nginx": 9113, "varnish": 9131, "mtail": 3903}),
])
def test_exporters_follow_the_tiers(host, expected):
    assert topology.exporters(host, HOSTVARS, GROUPS) == expected


def test_exporters_of_the_host_and_their_ports_win():
    hostvars = {**HOSTVARS, "app1": {"monitoring_exporters": ["node", "redis"], "monitoring_exporter_ports": {"redis": 9200}}}
    assert topology.exporters("app1", hostvars, GROUPS) == {"node": 9100, "redis": 9200}
    hostvars["app1"]["monitoring_exporters"] = ["node", "memcached"]
    with pytest.raises(AnsibleFilterError, match="monitoring_exporters of app1 names memcached: the exporters are node"):
        topology.exporters("app1", hostvars, GROUPS)

