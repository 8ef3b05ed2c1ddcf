#!/usr/bin/env python3
"""Instruction counts per command, deterministic on a noisy machine: redis-server (with a copy
of the module) runs under valgrind's callgrind; for each command the counters are zeroed, a
fixed batch is sent with redis-benchmark (-c 50 -P 16 over 10,000 random keys, as in the
throughput benchmark but fewer), and the profile is dumped. Prints Ir per request beside INCR
and the top functions (inclusive) of each profile; the callgrind files stay in
bench-results/profile-<time>/ for callgrind_annotate or kcachegrind.

    python3 bench/profile.py [NAME ...]     # default: every command below
    (BENCH_PROFILE_N=20000 requests per command, BENCH_PROFILE_KEYS=10000 keys;
     BENCH_PROFILE_CACHE=1 adds callgrind's cache simulation: data reads that miss the
     first-level and the last-level cache, per request)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as b  # noqa: E402

N = int(os.environ.get("BENCH_PROFILE_N", "20000"))
KEYS = int(os.environ.get("BENCH_PROFILE_KEYS", "10000"))
CACHE = os.environ.get("BENCH_PROFILE_CACHE", "0") == "1"


def commands(shas: dict[str, str]) -> dict[str, list[str]]:
    return {
        "INCR": ["INCR", "p:incr:__rand_int__"],
        "RATELIMIT.CHECK": ["RATELIMIT.CHECK", "p:rl1:__rand_int__", "100", "60000"],
        "RATELIMIT.CHECK-3": ["RATELIMIT.CHECK", "p:rl3:__rand_int__", "10", "1000", "100", "60000",
                              "1000", "3600000"],
        "RATELIMIT.PEEK": ["RATELIMIT.PEEK", "p:rl1:__rand_int__", "100", "60000"],
        "METRIC.ADD": ["METRIC.ADD", "p:m:__rand_int__", "42.5"],
        "METRIC.SUMMARY": ["METRIC.SUMMARY", "p:m:__rand_int__"],
        "LUA-ZSET": ["EVALSHA", shas["zset_log"], "1", "p:zs:__rand_int__", "100", "60000"],
        "LUA-STREAM": ["EVALSHA", shas["stream_log"], "1", "p:xs:__rand_int__", "100", "60000"],
        "HGETALL-12": ["HGETALL", "p:h:__rand_int__"],
    }


def filler(name: str, cmds: dict[str, list[str]]) -> list[str]:
    """The write that creates the keys a command reads."""
    if name == "RATELIMIT.PEEK":
        return cmds["RATELIMIT.CHECK"]
    if name == "METRIC.SUMMARY":
        return cmds["METRIC.ADD"]
    if name == "HGETALL-12":
        fields = [x for i in range(12) for x in (f"field{i}", "42.5")]
        return ["HSET", "p:h:__rand_int__", *fields]
    return cmds[name]


def totals(path: Path) -> dict[str, int]:
    """The dump's event totals by name (Ir, and with the cache simulation D1mr, DLmr, ...)."""
    events = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith(("summary:", "totals:")) and events:
            return dict(zip(events, map(int, line.split()[1:])))
    raise b.BenchError(f"no totals in {path}")


def main() -> int:
    if not shutil.which("valgrind"):
        print("profile: valgrind is missing (apt-get install valgrind)", file=sys.stderr)
        return 1
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out = b.ROOT / "bench-results" / f"profile-{stamp}"
    out.mkdir(parents=True)
    module = b.WORK / "libtally.so"
    shutil.copy2(os.environ.get("TALLY_MODULE", b.ROOT / "target/release/libtally.so"), module)
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/callgrind.out"]
    if CACHE:
        wrapper.append("--cache-sim=yes")
    srv = b.Server(module, wrapper=wrapper, start_timeout=120)
    pid = srv.proc.pid
    rows = []
    try:
        shas = b.load_scripts(srv.r)
        cmds = commands(shas)
        wanted = sys.argv[1:] or list(cmds)
        for name in wanted:
            cmd = cmds[name]
            # Warm: every key exists and every first-time allocation is done.
            fill = filler(name, cmds)
            b.pipe(srv.port, b.batched(
                lambda i: [a.replace("__rand_int__", f"{i:012d}") for a in fill], KEYS), KEYS)
            b.check_command(srv.r, cmd)
            b.redis_benchmark(srv.port, cmd, 2000, 16, keyspace=KEYS)
            subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
            b.redis_benchmark(srv.port, cmd, N, 16, keyspace=KEYS)
            before = set(out.glob("callgrind.out*"))
            subprocess.run(["callgrind_control", "-d", name, str(pid)], check=True, capture_output=True)
            dumped = sorted(set(out.glob("callgrind.out*")) - before)
            if not dumped:
                raise b.BenchError("callgrind wrote no dump")
            dump = dumped[-1].rename(out / f"{name}.callgrind")
            t = {k: v / N for k, v in totals(dump).items()}
            ir = t["Ir"]
            rows.append((name, ir, t.get("D1mr"), t.get("DLmr")))
            b.log(f"profile: {name}: {ir:,.0f} instructions per request")
            ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(dump)],
                                 capture_output=True, text=True).stdout
            (out / f"{name}.txt").write_text(ann)
    finally:
        srv.close()
        b.stop_all()
    incr = next((ir for name, ir, _, _ in rows if name == "INCR"), None)
    sha = hashlib.sha256(module.read_bytes()).hexdigest()[:16] if module.exists() else "?"
    print(f"\nmodule sha256 {sha}, {N:,} requests per command, -c 50 -P 16, {KEYS:,} keys")
    header = ["command", "instructions / request", "vs INCR"]
    if CACHE:
        header += ["D1 read misses / request", "LL read misses / request"]
    body = [[name, b.fmt_int(ir), b.fmt_ratio(ir / incr) if incr else ""]
            + ([f"{d1:,.1f}", f"{ll:,.1f}"] if CACHE else [])
            for name, ir, d1, ll in rows]
    print("\n" + b.table(header, body))
    print(f"\nprofiles: {out}/<command>.txt (callgrind_annotate --inclusive=yes)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except b.BenchError as e:
        print(f"profile: {e}", file=sys.stderr)
        sys.exit(1)
