#!/usr/bin/env bash
# Sets up everything the tests and the demo need on a fresh Debian machine, and
# nothing twice: a Docker engine, the Debian 12/13 systemd base images, the
# controller virtualenv, the controller image for the newer ansible-core versions.
# Each step checks first and only acts when missing or out of date.
#
#   scripts/testbed.sh [engine|images|venv|link|controllers|all]
#   (all: venv, collection link, engine, images, controllers)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
IMAGE_REPO=${IMAGE_REPO:-prodready/debian}
# Debian releases the tests run on: "<docker tag>:<suite>"
RELEASES=${RELEASES:-"12:bookworm 13:trixie"}
CACHE=${TESTBED_CACHE:-/var/cache/prodready-testbed}
# The controller for ansible-core 2.20+ (needs Python 3.12+): Debian 13's python3 in
# an image made from $IMAGE_REPO:13, one venv per tests/controllers/ansible-*.txt.
CONTROLLER_IMAGE=${CONTROLLER_IMAGE:-prodready/controller:13}
CONTROLLERS_DIR=$ROOT/tests/controllers
# pip in a container trusts only what this bundle trusts (a TLS proxy's CA, if any).
CA_BUNDLE=${PRODREADY_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

log() { printf '[testbed] %s\n' "$*" >&2; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    log "this step needs root (apt, dockerd, debootstrap): run as root"; exit 1
  fi
}

apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  need_root
  log "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

engine() {
  if docker info >/dev/null 2>&1; then return 0; fi
  command -v dockerd >/dev/null 2>&1 || apt_install docker.io
  apt_install iptables ca-certificates
  need_root
  log "starting dockerd (log: /var/log/prodready-dockerd.log)"
  # No init system on the test bed: run the daemon in the background ourselves.
  setsid nohup dockerd >/var/log/prodready-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && { log "dockerd is up"; return 0; }
    sleep 1
  done
  log "dockerd did not answer within 60 s; tail of its log:"
  tail -n 30 /var/log/prodready-dockerd.log >&2
  exit 1
}

# The Debian mirror this machine's apt already uses (first deb URI that serves 'main').
debian_mirror() {
  local uri
  uri=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
        | grep -v -- '-security' | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' \
        | awk '{print $1}' | grep -E '/debian/?$' | head -n 1)
  [ -n "$uri" ] || { log "cannot find a Debian mirror in apt's sources"; exit 1; }
  echo "${uri%/}"
}

images() {
  engine
  local rel tag suite mirror dir
  for rel in $RELEASES; do
    tag=${rel%%:*}; suite=${rel#*:}
    if docker image inspect "$IMAGE_REPO:$tag" >/dev/null 2>&1; then
      log "image $IMAGE_REPO:$tag present (cached)"; continue
    fi
    apt_install debootstrap debian-archive-keyring
    mirror=$(debian_mirror)
    dir=$(mktemp -d "${TMPDIR:-/tmp}/prodready-rootfs-$suite.XXXXXX")
    trap 'rm -rf "${dir:-/nonexistent}" "${dir:-/nonexistent}.log"' EXIT
    log "debootstrap $suite into $dir"
    debootstrap --variant=minbase \
      --include=systemd,systemd-sysv,python3,python3-apt,sudo,ca-certificates,iproute2,procps \
      "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 || { tail -n 30 "$dir.log" >&2; exit 1; }
    # A container needs no getty or udev-triggered device setup.
    rm -f "$dir"/etc/systemd/system/getty.target.wants/* \
          "$dir"/lib/systemd/system/multi-user.target.wants/getty.target || true
    echo "$suite" > "$dir/etc/hostname"
    tar -C "$dir" -c . | docker import \
      -c 'CMD ["/lib/systemd/systemd"]' -c 'ENV container=docker' \
      - "$IMAGE_REPO:$tag" >/dev/null
    rm -rf "$dir" "$dir.log"
    trap - EXIT
    log "image $IMAGE_REPO:$tag built"
  done
}

venv() {
  local stamp="$VENV/.requirements.sha256" want
  want=$(sha256sum "$ROOT/requirements-dev.txt" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
  apt_install python3-venv rsync git
  log "creating $VENV with the pinned tools"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r "$ROOT/requirements-dev.txt"
  echo "$want" > "$stamp"
}

# The controller image, rebuilt only when it is missing or its label (a hash of the
# base image, tests/controllers/build.sh and the pinned requirements) differs.
controllers() {
  images
  local base="$IMAGE_REPO:13" want have old build log
  want=$({ docker image inspect --format '{{.Id}}' "$base"
           cat "$CONTROLLERS_DIR/build.sh" "$CONTROLLERS_DIR"/ansible-*.txt; } | sha256sum | cut -d' ' -f1)
  have=$(docker image inspect --format '{{index .Config.Labels "prodready.controllers.sha256"}}' \
         "$CONTROLLER_IMAGE" 2>/dev/null || true)
  if [ "$have" = "$want" ]; then log "image $CONTROLLER_IMAGE present (cached)"; return 0; fi
  old=$(docker image inspect --format '{{.Id}}' "$CONTROLLER_IMAGE" 2>/dev/null || true)
  build=prodready-controller-build-$$
  log=$(mktemp "${TMPDIR:-/tmp}/prodready-controller.XXXXXX")
  local ca=()
  [ -f "$CA_BUNDLE" ] && ca=(-v "$CA_BUNDLE:/etc/ssl/host-ca.crt:ro" -e PIP_CERT=/etc/ssl/host-ca.crt)
  log "building $CONTROLLER_IMAGE from $base ($(cd "$CONTROLLERS_DIR" && echo ansible-*.txt))"
  trap 'docker rm -f "$build" >/dev/null 2>&1 || true' EXIT
  docker run --name "$build" "${ca[@]}" -v "$CONTROLLERS_DIR:/controllers:ro" \
    "$base" bash /controllers/build.sh >"$log" 2>&1 || { tail -n 30 "$log" >&2; exit 1; }
  sed 's/^/[testbed]   /' "$log" >&2
  docker commit --change "LABEL prodready.controllers.sha256=$want" --change 'CMD ["/bin/bash"]' \
    "$build" "$CONTROLLER_IMAGE" >/dev/null
  docker rm -f "$build" >/dev/null
  trap - EXIT
  rm -f "$log"
  # The image it replaces, unless a container still uses it.
  [ -n "$old" ] && docker image rm "$old" >/dev/null 2>&1 || true
  log "image $CONTROLLER_IMAGE built"
}

# Make the checkout importable as prodready.django for ansible, ansible-lint and molecule.
link() {
  local dir="$ROOT/.cache/collections/ansible_collections/prodready"
  mkdir -p "$dir"
  [ "$(readlink "$dir/django" 2>/dev/null)" = "$ROOT" ] || ln -sfn "$ROOT" "$dir/django"
}

case "${1:-all}" in
  engine) engine ;;
  images) images ;;
  venv) venv; link ;;
  link) link ;;
  controllers) controllers ;;
  all) venv; link; images; controllers ;;
  *) echo "usage: $0 [engine|images|venv|link|controllers|all]" >&2; exit 2 ;;
esac
