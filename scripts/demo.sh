#!/usr/bin/env bash
# `make demo`: a local systemd container as the target host, built with site.yml,
# then the demo app (examples/superbook) rolled out with deploy.yml.
#   scripts/demo.sh up|down          (up = host, site, deploy, check)
#   scripts/demo.sh host|site|deploy|check   one step (scripts/bench.py times them)
# DEMO_NAME, DEMO_HTTP_PORT, DEMO_HTTPS_PORT: another container beside the demo
# (scripts/bench.py uses prodready-bench on 9080/9443); the playbooks then reach it
# through a second inventory source that sets the demo host's ansible_host.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NAME=${DEMO_NAME:-prodready-demo}
IMAGE=${DEMO_IMAGE:-prodready/debian:12}
HTTP_PORT=${DEMO_HTTP_PORT:-8080}
HTTPS_PORT=${DEMO_HTTPS_PORT:-8443}

host() {
  if ! docker container inspect "$NAME" >/dev/null 2>&1; then
    # The same container options as the Molecule platforms (.config/molecule/config.yml).
    docker run -d --name "$NAME" --hostname "$NAME" \
      --cap-add SYS_ADMIN --cap-add NET_ADMIN --cap-add SYS_PTRACE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw --tmpfs /run --tmpfs /run/lock \
      -p "127.0.0.1:$HTTP_PORT:80" -p "127.0.0.1:$HTTPS_PORT:443" \
      "$IMAGE" /lib/systemd/systemd >/dev/null
  fi
  docker start "$NAME" >/dev/null
  for _ in $(seq 1 30); do
    state=$(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 1
  done
  # As in molecule/shared/prepare.yml: a VM's /proc/sys is writable, Docker's is not.
  docker exec "$NAME" mount -o remount,rw /proc/sys
}

# inventories/demo (its group_vars, secrets, host name) plus the container's name as
# ansible_host: host variables of a later inventory source win, inventory_dir stays.
target() {
  local file="$ROOT/.cache/demo-target-$NAME.yml"
  mkdir -p "$ROOT/.cache"
  printf 'all:\n  hosts:\n    prodready-demo:\n      ansible_host: %s\n' "$NAME" > "$file"
  echo "$file"
}

site() {
  cd "$ROOT" && "$ROOT/.venv/bin/ansible-playbook" -i inventories/demo -i "$(target)" playbooks/site.yml
}

deploy() {
  cd "$ROOT" && "$ROOT/.venv/bin/ansible-playbook" -i inventories/demo -i "$(target)" playbooks/deploy.yml \
    -e deploy_source="$ROOT/examples/superbook"
}

up() {
  host
  site
  deploy
  check
}

# The site must answer through the published port: Nginx (TLS) -> Varnish -> Gunicorn.
check() {
  local url="https://127.0.0.1:$HTTPS_PORT/" code=""
  for _ in $(seq 1 30); do
    code=$(curl -ks -o /dev/null -w '%{http_code}' --max-time 5 "$url" || true)
    [ "$code" = 200 ] && break
    sleep 1
  done
  if [ "$code" != 200 ]; then
    echo "The demo does not answer at $url (last status: ${code:-none})." >&2
    exit 1
  fi
  echo
  echo "The demo answers at $url (a self-signed certificate: your browser will ask)."
  echo "Release: $(curl -ks --max-time 5 "https://127.0.0.1:$HTTPS_PORT/version")"
  echo "Shell on the host: docker exec -it $NAME bash; manage.py: docker exec $NAME superbook-manage <command>"
}

down() {
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  echo "Demo host '$NAME' removed."
}

case "${1:-up}" in
  up|down|host|site|deploy|check) "${1:-up}" ;;
  *) echo "usage: $0 up|down|host|site|deploy|check" >&2; exit 2 ;;
esac
