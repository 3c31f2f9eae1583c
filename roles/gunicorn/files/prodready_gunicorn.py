"""Blue/green Gunicorn instances of one app, behind a front address that moves at once.

    prodready-gunicorn APP status
    prodready-gunicorn APP ensure [--check]
    prodready-gunicorn APP activate RELEASE_DIR [--expect PATH=TEXT]
    prodready-gunicorn APP restart

Each app has two instances, gunicorn-APP@blue and gunicorn-APP@green (systemd units
written by the prodready.django.gunicorn role), each with its own listening sockets.
The front (the addresses in gunicorn_bind, which Nginx or Varnish connect to) leads to
the live one: a TCP address through an nftables redirect, a unix socket path through a
symlink. `activate` starts the other instance on RELEASE_DIR beside the live one, waits
until every worker has loaded and warmed the app, checks its health through that
instance's own socket, and only then moves the front and the app's `current` link to it
(one nft transaction and two renames), checks the front, and lets the old instance finish
its requests and stop. A release that fails before the move never answers a request; a
front that fails its check right after the move is moved back at once.

Settings: /etc/gunicorn/APP.instances.json (written by the role). State:
/var/lib/prodready-gunicorn/APP/ (live: the live colour; blue, green: links to the
release each instance runs; front.nft: the nftables table of the live colour).
Each command prints one JSON object on stdout; progress and errors go to stderr.
"""

import argparse
import fcntl
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time

COLOURS = ("blue", "green")


class Failure(Exception):
    """A step failed: the message says which and why."""


def log(message):
    print(f"prodready-gunicorn: {message}", file=sys.stderr, flush=True)


def run(*argv, check=True):
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if check and result.returncode != 0:
        raise Failure(f"{' '.join(argv)} failed: {result.stdout.strip()}")
    return result


def front(bind, offset):
    """A front address and where each instance listens for it: a unix socket path with
    .blue or .green added, a TCP address on its port + offset (blue) or + 2 x offset (green)."""
    if bind.startswith("/"):
        return {"kind": "unix", "path": bind, **{c: {"kind": "unix", "path": f"{bind}.{c}"} for c in COLOURS}}
    address, port = bind.rsplit(":", 1)
    address = address.strip("[]")
    return {"kind": "tcp", "address": address, "port": int(port),
            **{c: {"kind": "tcp", "address": address, "port": int(port) + n * offset}
               for n, c in enumerate(COLOURS, start=1)}}


class App:
    def __init__(self, name):
        path = f"/etc/gunicorn/{name}.instances.json"
        try:
            with open(path, encoding="utf-8") as handle:
                self.conf = json.load(handle)
        except FileNotFoundError:
            raise Failure(f"{path} is missing: apply the prodready.django.gunicorn role for {name} first") from None
        self.name = name
        self.unit = self.conf["unit"]
        self.conf["fronts"] = [front(bind, self.conf["port_offset"]) for bind in self.conf["bind"]]
        self.state = self.conf["state_dir"]
        os.makedirs(self.state, mode=0o755, exist_ok=True)

    # --- state ---------------------------------------------------------------------
    def live(self):
        try:
            with open(os.path.join(self.state, "live"), encoding="utf-8") as handle:
                colour = handle.read().strip()
        except FileNotFoundError:
            return None
        return colour if colour in COLOURS else None

    def release_of(self, colour):
        link = os.path.join(self.state, colour)
        return os.path.realpath(link) if os.path.islink(link) else None

    def replace_link(self, link, target):
        """A new link renamed over the old one: at every instant it is one or the other."""
        relative = os.path.relpath(target, os.path.dirname(link))
        temporary = f"{link}.new"
        if os.path.lexists(temporary):
            os.unlink(temporary)
        os.symlink(relative if not relative.startswith("..") else target, temporary)
        os.replace(temporary, link)

    def move_app_dir(self, release):
        """Points the app's `current` link at release (left alone when it is a real directory)."""
        link = self.conf.get("app_dir_link")
        if link and release and (os.path.islink(link) or not os.path.lexists(link)):
            self.replace_link(link, release)

    def write_state(self, name, text):
        temporary = os.path.join(self.state, f".{name}.new")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, os.path.join(self.state, name))

    def record(self, event, **values):
        """Append an event with the host's monotonic clock (the tests line requests up with it)."""
        line = json.dumps({"event": event, "monotonic": time.monotonic(), "time": time.time(), **values})
        with open(os.path.join(self.state, "events.jsonl"), "a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    # --- units ---------------------------------------------------------------------
    def units(self, colour):
        return [f"{self.unit}@{colour}.socket", f"{self.unit}@{colour}.service"]

    def active(self, colour):
        return run("systemctl", "is-active", "--quiet", f"{self.unit}@{colour}.service", check=False).returncode == 0

    def journal(self, colour, lines=25):
        return run("journalctl", "-u", f"{self.unit}@{colour}.service", "-n", str(lines), "--no-pager",
                   "-o", "cat", check=False).stdout.strip()

    def stop(self, colour):
        # The service first: its workers finish their requests (graceful_timeout); then the
        # socket, which would otherwise start it again on the next connection.
        run("systemctl", "stop", f"{self.unit}@{colour}.service")
        run("systemctl", "stop", f"{self.unit}@{colour}.socket")

    # --- the front -----------------------------------------------------------------
    def nft_table(self, colour):
        table = "inet " + re.sub(r"[^A-Za-z0-9_]", "_", self.unit)
        rules = []
        for front in self.conf["fronts"]:
            if front["kind"] != "tcp":
                continue
            port = front["port"]
            target = front[colour]
            if front["address"] in ("0.0.0.0", "::"):
                family = "" if front["address"] == "0.0.0.0" else "ip6 "
                match = f"meta nfproto {'ipv4' if not family else 'ipv6'} tcp dport {port} fib daddr type local"
                rules.append(f"{match} redirect to :{target['port']}")
            elif ":" in front["address"]:
                rules.append(f"ip6 daddr {front['address']} tcp dport {port} dnat ip6 to [{front['address']}]:{target['port']}")
            else:
                rules.append(f"ip daddr {front['address']} tcp dport {port} dnat ip to {front['address']}:{target['port']}")
        body = "\n".join(f"    {rule}" for rule in rules)
        # Locally made connections pass the output hook, others the prerouting hook.
        chains = "\n".join(
            f"  chain {hook} {{\n    type nat hook {hook} priority -100; policy accept;\n{body}\n  }}"
            for hook in ("output", "prerouting"))
        # Declaring, deleting and adding the table in one file is one transaction.
        return f"table {table}\ndelete table {table}\ntable {table} {{\n{chains}\n}}\n"

    def apply_front(self, colour):
        """Points every front address at colour: one nft transaction, then one rename per unix socket."""
        if any(front["kind"] == "tcp" for front in self.conf["fronts"]):
            self.write_state("front.nft", self.nft_table(colour))
            run("nft", "-f", os.path.join(self.state, "front.nft"))
        for front in self.conf["fronts"]:
            if front["kind"] == "unix":
                self.replace_link(front["path"], front[colour]["path"])

    def front_points_to(self):
        """The colour every front address leads to now, or None when they disagree or lead nowhere."""
        seen = set()
        for front in self.conf["fronts"]:
            if front["kind"] == "unix":
                target = os.path.realpath(front["path"]) if os.path.islink(front["path"]) else None
                seen.add(next((c for c in COLOURS if front[c]["path"] == target), None))
        if any(front["kind"] == "tcp" for front in self.conf["fronts"]):
            listed = run("nft", "list", "table", "inet", re.sub(r"[^A-Za-z0-9_]", "_", self.unit), check=False).stdout
            ports = set(re.findall(r" to \S*:(\d+)$", listed, re.M)) if "hook output" in listed else set()
            expected = {c: {str(f[c]["port"]) for f in self.conf["fronts"] if f["kind"] == "tcp"} for c in COLOURS}
            seen.add(next((c for c in COLOURS if ports == expected[c]), None))
        return seen.pop() if len(seen) == 1 else None

    # --- health --------------------------------------------------------------------
    def request(self, address, path):
        """GET path from an address (a front entry's colour or front), as Nginx forwards HTTPS."""
        check = self.conf["healthcheck"]
        if address["kind"] == "unix":
            conn = http.client.HTTPConnection("localhost", timeout=check["timeout"])
            conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            conn.sock.settimeout(check["timeout"])
            conn.sock.connect(address["path"])
        else:
            host = "127.0.0.1" if address["address"] == "0.0.0.0" else ("::1" if address["address"] == "::" else address["address"])
            conn = http.client.HTTPConnection(host, address["port"], timeout=check["timeout"])
        try:
            conn.request("GET", path, headers={"Host": check["host"], "X-Forwarded-Proto": "https",
                                               "User-Agent": "prodready-gunicorn health check"})
            response = conn.getresponse()
            return response.status, response.read(4000).decode("utf-8", "replace")
        finally:
            conn.close()

    def check_health(self, address, label, expect=None):
        """The health check path must answer one of the statuses (and expect's path its text)."""
        check = self.conf["healthcheck"]
        deadline = time.monotonic() + check["seconds"]
        while True:
            try:
                status, body = self.request(address, check["path"])
                problem = None if status in check["status"] else f"GET {check['path']} answered {status}: {body[:500]}"
                if problem is None and expect:
                    status, body = self.request(address, expect[0])
                    if status != 200 or expect[1] not in body:
                        problem = f"GET {expect[0]} answered {status} without {expect[1]!r}: {body[:300]}"
            except OSError as error:
                problem = f"GET {check['path']} failed: {error}"
            if problem is None:
                return
            if time.monotonic() >= deadline:
                raise Failure(f"{label}: {problem}")
            time.sleep(0.5)

    def wait_ready(self, colour):
        """Until every worker of colour has loaded and warmed the app (the config's hooks mark it)."""
        ready_dir = f"/run/{self.unit}-{colour}"
        deadline = time.monotonic() + self.conf["start_seconds"]
        while True:
            if not self.active(colour):
                raise Failure(f"{self.unit}@{colour} stopped while starting:\n{self.journal(colour)}")
            main = run("systemctl", "show", "-p", "MainPID", "--value", f"{self.unit}@{colour}.service").stdout.strip()
            children = set(run("pgrep", "-P", main, check=False).stdout.split()) if main not in ("", "0") else set()
            try:
                ready = {name.split("-", 1)[1] for name in os.listdir(ready_dir) if name.startswith("worker-")}
            except FileNotFoundError:
                ready = set()
            if len(ready & children) >= self.conf["workers"]:
                return
            if time.monotonic() >= deadline:
                raise Failure(
                    f"{self.unit}@{colour}: {len(ready & children)} of {self.conf['workers']} workers ready after "
                    f"{self.conf['start_seconds']} s:\n{self.journal(colour)}")
            time.sleep(0.2)

    def drain(self, colour):
        """Until the old instance's sockets hold no connection that waits for a worker."""
        addresses = [front[colour] for front in self.conf["fronts"]]
        deadline = time.monotonic() + self.conf["graceful_seconds"]
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            waiting = 0
            for line in run("ss", "-Hlntx", check=False).stdout.splitlines():
                fields = line.split()
                local = fields[4] if len(fields) > 4 else ""
                for address in addresses:
                    name = address["path"] if address["kind"] == "unix" else f":{address['port']}"
                    if local == name or (address["kind"] == "tcp" and local.endswith(name)):
                        waiting += int(fields[2])
            quiet = quiet + 1 if waiting == 0 else 0

    def stale(self, colour):
        """The settings, units or environment files changed since colour's instance started."""
        started = run("systemctl", "show", "-p", "ActiveEnterTimestampMonotonic", "--value",
                      f"{self.unit}@{colour}.service").stdout.strip()
        if not started.isdigit() or started == "0":
            return []
        age_of_start = time.monotonic() - int(started) / 1e6
        newer = []
        for path in self.conf.get("watch", []):
            path = path.replace("%i", colour)
            try:
                if time.time() - os.stat(path).st_mtime < age_of_start:
                    newer.append(path)
            except FileNotFoundError:
                pass
        return newer

    # --- commands ------------------------------------------------------------------
    def status(self):
        live = self.live()
        return {
            "live": live,
            "front": self.front_points_to(),
            "release": self.release_of(live) if live else None,
            "instances": {c: {"active": self.active(c), "release": self.release_of(c)} for c in COLOURS},
        }

    def activate(self, release, expect=None, reason="activate"):
        release = os.path.realpath(release)
        if not os.path.isdir(release):
            raise Failure(f"{release} is not a directory")
        live = self.live()
        new = "green" if live == "blue" else "blue"
        old_release = self.release_of(live) if live else None
        step = "start"
        try:
            log(f"{reason}: starting {self.unit}@{new} on {release} beside {live or 'nothing'}")
            if self.active(new) or run("systemctl", "is-active", "--quiet", f"{self.unit}@{new}.socket",
                                       check=False).returncode == 0:
                self.stop(new)
            self.replace_link(os.path.join(self.state, new), release)
            run("systemctl", "start", *self.units(new))
            step = "wait for its workers"
            self.wait_ready(new)
            step = "health check before the switch"
            first = self.conf["fronts"][0]
            self.check_health(first[new], f"{self.unit}@{new} ({release})", expect)
            self.record("healthy", colour=new, release=release)
        except Failure:
            log(f"{reason}: {self.unit}@{new} failed at '{step}': it is stopped and never took a request")
            self.stop(new)
            raise
        step = "switch"
        self.apply_front(new)
        self.move_app_dir(release)
        self.write_state("live", new + "\n")
        self.record("switched", colour=new, release=release, previous=live)
        log(f"{reason}: the front leads to {self.unit}@{new}")
        try:
            self.check_health(self.conf["fronts"][0], "the front after the switch")
        except Failure as failure:
            if live and self.active(live):
                self.apply_front(live)
                self.move_app_dir(old_release)
                self.write_state("live", live + "\n")
                self.record("put back", colour=live, release=old_release)
                self.stop(new)
                raise Failure(f"{failure}; the front leads to {self.unit}@{live} ({old_release}) again") from None
            raise
        run("systemctl", "enable", "--quiet", *self.units(new))
        if live:
            self.drain(live)
            self.stop(live)
            run("systemctl", "disable", "--quiet", *self.units(live))
            self.record("stopped", colour=live, release=old_release)
        self.retire_legacy_units()
        return {"changed": True, "live": new, "previous": live, "release": release, "previous_release": old_release}

    def retire_legacy_units(self):
        """The single gunicorn-APP.socket/.service of earlier versions: stopped once the front has moved."""
        for unit in (f"{self.unit}.service", f"{self.unit}.socket"):
            if os.path.exists(f"/etc/systemd/system/{unit}"):
                run("systemctl", "disable", "--now", "--quiet", unit, check=False)

    def ensure(self, check_only):
        """What a converge wants: the live instance running, the front on it, the other one stopped."""
        live = self.live()
        if live is None:
            link = self.conf.get("app_dir_link")
            if not link or not os.path.isdir(link):
                return {"changed": False, "live": None, "msg": f"nothing to run yet: {link} is missing"}
            if check_only:
                return {"changed": True, "live": None, "msg": f"would start {self.unit}@blue on {os.path.realpath(link)}"}
            return self.activate(link, reason="first start")
        idle = "green" if live == "blue" else "blue"
        todo = []
        newer = self.stale(live) if self.active(live) else []
        if not self.active(live):
            todo.append(f"start {self.unit}@{live}")
        elif newer:
            todo.append(f"start the live release again as the other instance ({', '.join(newer)} changed)")
        if self.front_points_to() != live:
            todo.append(f"point the front at {self.unit}@{live}")
        if self.active(idle):
            todo.append(f"stop {self.unit}@{idle}")
        if check_only or not todo:
            return {"changed": bool(todo), "live": live, "msg": "; ".join(todo) or "in place"}
        if newer:
            result = self.activate(self.release_of(live), reason="new settings")
            return result | {"msg": "; ".join(todo)}
        if not self.active(live):
            run("systemctl", "start", *self.units(live))
            run("systemctl", "enable", "--quiet", *self.units(live))
            self.wait_ready(live)
        self.apply_front(live)
        if self.active(idle):
            self.stop(idle)
            run("systemctl", "disable", "--quiet", *self.units(idle))
        self.retire_legacy_units()
        return {"changed": True, "live": live, "msg": "; ".join(todo)}

    def restart(self):
        live = self.live()
        if live is None:
            return self.ensure(False)
        return self.activate(self.release_of(live), reason="restart")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("app")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    ensure = sub.add_parser("ensure")
    ensure.add_argument("--check", action="store_true")
    activate = sub.add_parser("activate")
    activate.add_argument("release")
    activate.add_argument("--expect", metavar="PATH=TEXT", default="")
    sub.add_parser("restart")
    args = parser.parse_args()
    try:
        app = App(args.app)
        if args.command == "status":
            result = app.status()
        elif args.command == "ensure" and args.check:
            result = app.ensure(True)
        else:
            with open(os.path.join(app.state, "lock"), "w", encoding="utf-8") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if args.command == "ensure":
                    result = app.ensure(False)
                elif args.command == "restart":
                    result = app.restart()
                else:
                    expect = tuple(args.expect.split("=", 1)) if args.expect else None
                    result = app.activate(args.release, expect)
    except Failure as failure:
        print(json.dumps({"failed": True, "msg": str(failure)}))
        log(str(failure))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
