#!/usr/bin/env bash
# `make bench`: throughput, memory, scaling and HTTP benchmarks of tally (see BENCHMARKS.md).
# Starts its own redis-server (and the API when target/release/tally-api exists) on free
# loopback ports in a temp dir, never a running server; writes bench-results/<time>/ and
# prints the tables. Knobs: BENCH_ROUNDS, BENCH_N_PIPE, BENCH_N_NOPIPE, BENCH_HTTP_SECS,
# BENCH_SECTIONS (throughput,memory,scaling,http), BENCH_QUICK=1 (see bench/bench.py);
# BENCH_PROFILE=1 adds instruction counts per command under callgrind (bench/profile.py).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in python3 redis-server redis-cli redis-benchmark; do
  command -v "$tool" >/dev/null 2>&1 || { echo "bench: $tool is missing (make deps)" >&2; exit 1; }
done
command -v wrk >/dev/null 2>&1 || echo "bench: wrk is missing: the HTTP part will fail (make deps)" >&2
[ -f target/release/libtally.so ] || {
  echo "bench: target/release/libtally.so is missing: cargo build --release -p tally" >&2
  exit 1
}

work=$(mktemp -d "${TMPDIR:-/tmp}/tally-bench.XXXXXX")
child=
cleanup() {
  # Stop the driver first (it stops what it started), then anything it left behind if it
  # was killed outright: every pid it started is listed in $work/pids.
  if [ -n "$child" ] && kill -0 "$child" 2>/dev/null; then
    kill -TERM "$child" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
  fi
  if [ -f "$work/pids" ]; then
    while read -r pid; do
      kill "$pid" 2>/dev/null || true
    done <"$work/pids"
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Each step runs in the background and is waited for, so a signal to this script is handled
# at once (bash defers traps while a foreground child runs).
run() {
  BENCH_WORK="$work" python3 "$@" &
  child=$!
  wait "$child"
}
run bench/bench.py "$@"
# Labels (SPEC section 9): merged and grouped queries over 100 series, single node and cluster.
case ",${BENCH_SECTIONS:-labels}," in
  *,labels,*) run bench/labels.py ;;
esac
if [ "${BENCH_PROFILE:-0}" = 1 ]; then
  run bench/profile.py
fi
