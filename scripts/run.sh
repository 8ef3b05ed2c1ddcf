#!/usr/bin/env bash
# `make run`: starts redis-server with the tally module (port REDIS_PORT, default 6379, data and
# AOF in ./data) and the API (port PORT, default 8000) on localhost. Ctrl-C, or either process
# ending, stops both. Other variables (RATE_LIMIT, ...) pass through to the API (.env.example).
set -euo pipefail
cd "$(dirname "$0")/.."

REDIS_PORT=${REDIS_PORT:-6379}
PORT=${PORT:-8000}
HOST=${HOST:-127.0.0.1}
MODULE=${TALLY_MODULE:-target/release/libtally.so}
API=${TALLY_API:-target/release/tally-api}
DATA_DIR=${DATA_DIR:-./data}

die() { echo "run: $*" >&2; exit 1; }

for f in "$MODULE" "$API"; do
  [ -e "$f" ] || die "$f not found: build first (make build)"
done
command -v redis-server >/dev/null 2>&1 || die "redis-server not found (scripts/deps.sh run installs it)"
command -v redis-cli >/dev/null 2>&1 || die "redis-cli not found (scripts/deps.sh run installs redis-tools)"

# Something already listening on a port? (bash's /dev/tcp: no extra tool needed)
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if port_in_use "$REDIS_PORT"; then
  die "port $REDIS_PORT is already in use (a system Redis? 'sudo systemctl stop redis-server'), or pick another: make run REDIS_PORT=6380"
fi
if port_in_use "$PORT"; then
  die "port $PORT is already in use; pick another: make run PORT=8001"
fi

mkdir -p "$DATA_DIR"
DATA_DIR=$(cd "$DATA_DIR" && pwd)
MODULE=$(cd "$(dirname "$MODULE")" && pwd)/$(basename "$MODULE")

REDIS_PID=
API_PID=
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$API_PID" ] && kill -0 "$API_PID" 2>/dev/null; then
    kill -TERM "$API_PID" 2>/dev/null || true
    wait "$API_PID" 2>/dev/null || true
  fi
  if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then
    redis-cli -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || kill -TERM "$REDIS_PID" 2>/dev/null || true
    wait "$REDIS_PID" 2>/dev/null || true
  fi
  echo "run: stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$DATA_DIR" \
  --appendonly yes --logfile "$DATA_DIR/redis.log" \
  --loadmodule "$MODULE" &
REDIS_PID=$!

deadline=$((SECONDS + 10))
until redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; do
  if ! kill -0 "$REDIS_PID" 2>/dev/null; then
    tail -n 20 "$DATA_DIR/redis.log" >&2 || true
    die "redis-server exited (log above, full log in $DATA_DIR/redis.log)"
  fi
  [ "$SECONDS" -lt "$deadline" ] || die "redis-server did not answer PING within 10 s (see $DATA_DIR/redis.log)"
  sleep 0.1
done

export REDIS_URL="redis://127.0.0.1:$REDIS_PORT" HOST PORT
"$API" &
API_PID=$!

echo "run: Redis with the tally module on 127.0.0.1:$REDIS_PORT (data: $DATA_DIR)"
echo "run: API on http://$HOST:$PORT (docs: http://$HOST:$PORT/docs); Ctrl-C stops both"
# Whichever ends first ends the run (the EXIT trap stops the other).
wait -n "$API_PID" "$REDIS_PID" || true
