# Copyright: prodready.django maintainers
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""How the hosts of an inventory reach each other: the layout read from its groups."""

from __future__ import annotations

import ipaddress

from ansible.errors import AnsibleFilterError

LOOPBACK = "127.0.0.1"


# RFC 1918's private networks and RFC 6598's shared address space (100.64.0.0/10), where
# clouds put their private networks. Not Python's is_private, which also counts the
# documentation and benchmark ranges (192.0.2.0/24, 198.18.0.0/15...) that are no
# private network of anyone's.
PRIVATE_NETWORKS = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")]


def _is_private_ipv4(value) -> bool:
    try:
        address = ipaddress.IPv4Address(str(value))
    except ValueError:
        return False
    return any(address in network for network in PRIVATE_NETWORKS)


def private_address(host, hostvars, local=None):
    """The IPv4 address the other hosts of the inventory reach `host` on.

    127.0.0.1 when `host` is `local` (the host the task runs for: the same machine);
    else the host's `prodready_private_address`; else its `ansible_host` when that is a
    private IPv4 address. Anything else is an error that names the host and the variable:
    a service of one tier must never be bound to, or reached on, a public address by
    guesswork.
    """
    name = str(host)
    if local is not None and name == str(local):
        return LOOPBACK
    try:
        variables = hostvars[name]
    except KeyError:
        raise AnsibleFilterError(f"private_address: {name!r} is not a host of the inventory") from None
    configured = variables.get("prodready_private_address")
    if configured not in (None, ""):
        if not _is_private_ipv4(configured):
            raise AnsibleFilterError(
                f"prodready_private_address of {name} is {configured!r}: it must be the IPv4 address of the "
                "host's private network interface (10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 or 100.64.0.0/10)"
            )
        return str(configured)
    fallback = variables.get("ansible_host")
    if _is_private_ipv4(fallback):
        return str(fallback)
    raise AnsibleFilterError(
        f"prodready_private_address is not set for {name}, and its ansible_host ({fallback or name}) is not a "
        "private IPv4 address: set prodready_private_address for it in the inventory, the address of its "
        "private network interface, on which the other tiers reach it"
    )


def db_primary(hosts, hostvars):
    """The inventory name of the PostgreSQL primary among `hosts` (the db group): the one
    host whose postgresql_replication_role is not "replica"; None for no host. Two
    primaries are an error: the app hosts would not know which one to use."""
    names = [str(h) for h in hosts or []]
    primaries = [h for h in names if (hostvars[h].get("postgresql_replication_role") or "primary") != "replica"]
    if len(primaries) > 1:
        raise AnsibleFilterError(
            f"the db group has {len(primaries)} primaries ({', '.join(primaries)}): set "
            "postgresql_replication_role: replica on all of them but one"
        )
    if not primaries and names:
        raise AnsibleFilterError(
            f"the db group has no primary: every host ({', '.join(names)}) has postgresql_replication_role: replica"
        )
    return primaries[0] if primaries else None


def same_site(hosts, hostvars, local):
    """The hosts of `hosts` (a group) that belong to the same site as `local`: the same
    prodready_site (unset: one site for the whole inventory). An inventory that holds
    several sites, each a set of tiers (the test scenarios' independent single-host
    stacks), keeps each site's tiers to itself."""
    def site(name):
        return hostvars[str(name)].get("prodready_site") or ""

    mine = site(local)
    return [str(h) for h in hosts or [] if site(h) == mine]


def other_hosts(hosts, hostvars, local):
    """The hosts of `hosts` of the same site as `local`, but `local` itself: the other
    machines of a tier that this host serves or is served by."""
    return [h for h in same_site(hosts, hostvars, local) if h != str(local)]


# The Prometheus exporters of the monitoring role, their ports, and the group whose hosts
# run each (the node exporter runs on every host). mtail turns Nginx's access log into the
# app's request rate, 5xx ratio and latency. Memcached has none: Debian ships no exporter.
EXPORTER_PORTS = {"node": 9100, "postgres": 9187, "redis": 9121, "nginx": 9113, "varnish": 9131, "mtail": 3903}
EXPORTER_GROUPS = {"postgres": "db", "redis": "cache", "nginx": "web", "varnish": "web", "mtail": "web"}


def exporters(host, hostvars, groups):
    """The exporters `host` runs, {name: port}: the node exporter, and those of its tiers
    (EXPORTER_GROUPS). The host's monitoring_exporters, when set, is the list instead;
    its monitoring_exporter_ports changes ports. The monitoring role listens on them, the
    prometheus role scrapes them and the common role's firewall opens them to it."""
    name = str(host)
    variables = hostvars[name]
    chosen = variables.get("monitoring_exporters")
    if chosen is None:
        chosen = ["node"] + [e for e, group in EXPORTER_GROUPS.items() if name in (groups.get(group) or [])]
    unknown = [e for e in chosen if e not in EXPORTER_PORTS]
    if unknown:
        raise AnsibleFilterError(
            f"monitoring_exporters of {name} names {', '.join(map(str, unknown))}: the exporters are "
            f"{', '.join(EXPORTER_PORTS)}"
        )
    ports = {**EXPORTER_PORTS, **(variables.get("monitoring_exporter_ports") or {})}
    return {e: int(ports[e]) for e in chosen}


class FilterModule:
    def filters(self):
        return {"private_address": private_address, "db_primary": db_primary, "same_site": same_site,
                "other_hosts": other_hosts, "exporters": exporters}
