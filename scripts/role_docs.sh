#!/usr/bin/env bash
# Writes the "Variables" part of each role's README.md from its meta/argument_specs.yml,
# every entry point, with aar-doc (requirements-dev.txt) and the template
# scripts/role_docs.md.j2: the lines from <!-- BEGIN_ANSIBLE_DOCS --> to
# <!-- END_ANSIBLE_DOCS --> are replaced, the rest of the README is kept.
#
#   scripts/role_docs.sh [role ...]     (no role: every role)
#
# ROLE_DOCS_ROOT: the collection to write in (default: this checkout); tests/test_docs.py
# points it at a copy and compares.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=${ROLE_DOCS_ROOT:-$(dirname "$HERE")}
AAR_DOC=$(command -v aar-doc || echo "$(dirname "$HERE")/.venv/bin/aar-doc")

if [ $# -eq 0 ]; then
  set -- $(cd "$ROOT/roles" && for dir in */; do [ -f "$dir/meta/argument_specs.yml" ] && echo "${dir%/}"; done)
fi
for role in "$@"; do
  "$AAR_DOC" --output-mode inject --output-template "$HERE/role_docs.md.j2" \
    --output-file "$ROOT/roles/$role/README.md" "$ROOT/roles/$role" markdown
done
