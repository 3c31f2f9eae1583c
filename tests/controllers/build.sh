#!/usr/bin/env bash
# Builds the controller for the newer ansible-core versions inside a container of the
# Debian 13 base image (ansible-core 2.20+ needs Python 3.12+; Debian 13 has 3.13).
# scripts/testbed.sh controllers runs it with this folder mounted at /controllers and
# commits the container as prodready/controller:13. For each ansible-<core>.txt here:
# a venv /opt/ansible-<core> with those pins. And the docker CLI, for the
# community.docker.docker connection through the host's mounted /var/run/docker.sock.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker-cli python3-venv >/dev/null
apt-get clean
rm -rf /var/lib/apt/lists/*
for req in /controllers/ansible-*.txt; do
  venv=/opt/$(basename "$req" .txt)
  echo "$venv: $(grep -Ev '^\s*(#|$)' "$req" | tr '\n' ' ')"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --no-cache-dir --disable-pip-version-check -r "$req"
  "$venv/bin/ansible-playbook" --version | head -n 1
done
docker --version
