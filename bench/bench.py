#!/usr/bin/env python3
"""tally benchmarks (`make bench`): throughput, memory, scaling and HTTP.

Starts its own redis-server (a copy of target/release/libtally.so loaded, a free loopback
port, a temp dir), never touches a server it did not start, and writes everything to
bench-results/<UTC time>/ (raw.json, results.md) with bench-results/latest pointing there.

Method: every throughput comparison runs in rounds; inside a round each benchmark runs once,
in an order rotated from round to round (A B C, B C A, ...), so slow phases of a noisy machine
hit every benchmark alike. Reported: the median over rounds, the spread (min-max), and ratios
computed inside each round (e.g. X / INCR of the same round and pipelining), then the median
of those per-round ratios.

Python 3.11 standard library only. Knobs (environment):
  BENCH_ROUNDS      rounds of the throughput and scaling comparisons (5)
  BENCH_N_PIPE      requests per pipelined run, -P 16 (300000)
  BENCH_N_NOPIPE    requests per unpipelined run, -P 1 (100000)
  BENCH_HTTP_SECS   seconds per wrk run (5)
  BENCH_RUN_SECS    target length of one measured redis-benchmark run (1.0)
  BENCH_SECTIONS    comma list of throughput,memory,scaling,http (all)
  BENCH_QUICK=1     tiny runs to check the tooling works (numbers meaningless)
  TALLY_MODULE      module to load (target/release/libtally.so)
  TALLY_API         API binary (target/release/tally-api)
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LUA = ROOT / "bench" / "lua"
WRK = ROOT / "bench" / "wrk"

QUICK = os.environ.get("BENCH_QUICK") == "1"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2" if QUICK else "5"))
N_PIPE = int(os.environ.get("BENCH_N_PIPE", "20000" if QUICK else "300000"))
N_NOPIPE = int(os.environ.get("BENCH_N_NOPIPE", "5000" if QUICK else "100000"))
HTTP_SECS = int(os.environ.get("BENCH_HTTP_SECS", "2" if QUICK else "5"))
# Each measured run is sized from its warm-up to last about this long (at most N_PIPE /
# N_NOPIPE requests), so a slow command cannot blow the time budget.
RUN_SECS = float(os.environ.get("BENCH_RUN_SECS", "0.3" if QUICK else "1.0"))
SECTIONS = set(
    os.environ.get("BENCH_SECTIONS", "throughput,memory,scaling,http").split(",")
)
KEYSPACE = 100_000  # redis-benchmark -r: __rand_int__ is a 12-digit number below this
CLIENTS = 50
STEP_TIMEOUT = 300  # seconds: no single external step may run longer

# The rate-limit policy of the throughput comparison: 100 requests per 60 s.
LIMIT, WINDOW = "100", "60000"


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# Processes: everything started is recorded (for scripts/bench.sh's trap) and stopped at exit.

WORK = Path(os.environ.get("BENCH_WORK") or tempfile.mkdtemp(prefix="tally-bench."))
_children: list[subprocess.Popen] = []


def spawn(args: list[str], **kw) -> subprocess.Popen:
    p = subprocess.Popen(args, **kw)
    _children.append(p)
    with open(WORK / "pids", "a") as f:
        f.write(f"{p.pid}\n")
    return p


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)


def stop_all() -> None:
    for p in reversed(_children):
        stop(p)


def free_port() -> int:
    for _ in range(20):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port != 6379:
            return port
    raise BenchError("no free port")


# --------------------------------------------------------------------------------------------
# A minimal RESP2 client for setup and measurements (not for load: redis-benchmark does that).


class Redis:
    def __init__(self, port: int):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
        self.buf = b""

    @staticmethod
    def encode(*args) -> bytes:
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            b = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(b), b))
        return b"".join(out)

    def _line(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n")
            if i >= 0:
                line, self.buf = self.buf[:i], self.buf[i + 2 :]
                return line
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise BenchError("redis closed the connection")
            self.buf += chunk

    def _exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise BenchError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2 :]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise BenchError(f"redis error: {rest.decode()}")
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n).decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise BenchError(f"unexpected reply {line!r}")

    def call(self, *args):
        self.sock.sendall(self.encode(*args))
        return self.reply()

    def info(self, section: str) -> dict[str, str]:
        out = {}
        for line in self.call("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                out[k] = v
        return out

    def used_memory(self) -> int:
        return int(self.info("memory")["used_memory"])

    def settled_used_memory(self, wait: float) -> int:
        """used_memory once only this connection is left (a finished redis-cli --pipe client
        still holds its buffers until the server notices it closed) and after `wait` seconds
        (incremental rehashing of the keyspace finishes within serverCron's budget)."""
        deadline = time.monotonic() + 10
        while int(self.info("clients")["connected_clients"]) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(wait)
        return self.used_memory()

    def close(self) -> None:
        self.sock.close()


def pipe(port: int, commands, expect: int) -> None:
    """Sends pre-encoded RESP commands through `redis-cli --pipe` (fast, C) and checks that
    every one of the `expect` replies arrived and none was an error."""
    p = spawn(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "--pipe"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        for chunk in commands:
            p.stdin.write(chunk)
        p.stdin.close()
        out = p.stdout.read().decode(errors="replace")
        p.wait(timeout=STEP_TIMEOUT)
    finally:
        stop(p)
    m = re.search(r"errors: (\d+), replies: (\d+)", out)
    if not m or int(m.group(1)) != 0 or int(m.group(2)) != expect:
        raise BenchError(f"redis-cli --pipe: expected {expect} replies, no error; got: {out[-500:]}")


def batched(template_fn, count: int, batch: int = 10_000):
    """Yields RESP bytes for count commands, template_fn(i) -> tuple of args."""
    buf = []
    for i in range(count):
        buf.append(Redis.encode(*template_fn(i)))
        if len(buf) == batch:
            yield b"".join(buf)
            buf = []
    if buf:
        yield b"".join(buf)


def repeated(cmd: tuple, count: int, batch: int = 10_000):
    """Yields RESP bytes for the same command count times."""
    one = Redis.encode(*cmd)
    full, rest = divmod(count, batch)
    block = one * batch
    for _ in range(full):
        yield block
    if rest:
        yield one * rest


# --------------------------------------------------------------------------------------------
# The server under test.


class Server:
    def __init__(self, module: Path, wrapper: list[str] | None = None, start_timeout: float = 10):
        """`wrapper` prefixes the command line (bench/profile.py runs it under callgrind)."""
        self.dir = Path(tempfile.mkdtemp(prefix="redis.", dir=WORK))
        last = ""
        for _ in range(3):
            self.port = free_port()
            self.log = self.dir / "redis.log"
            self.proc = spawn(
                (wrapper or []) + [
                    "redis-server",
                    "--port", str(self.port),
                    "--bind", "127.0.0.1",
                    "--dir", str(self.dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--logfile", str(self.log),
                    "--daemonize", "no",
                    "--loadmodule", str(module),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + start_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    r = Redis(self.port)
                    if r.call("PING") == "PONG":
                        # Make sure it is ours, not something that grabbed the port first.
                        if int(r.info("server")["process_id"]) != self.proc.pid:
                            raise BenchError("another server answered on our port")
                        self.r = r
                        return
                except (OSError, BenchError) as e:
                    last = str(e)
                    time.sleep(0.05)
            stop(self.proc)
            last = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else last
        raise BenchError(f"redis-server did not start:\n{last}")

    def new_client(self) -> Redis:
        return Redis(self.port)

    def close(self) -> None:
        try:
            self.r.call("SHUTDOWN", "NOSAVE")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        stop(self.proc)


def redis_benchmark(port: int, cmd: list[str], n: int, pipeline: int, clients: int = CLIENTS,
                    keyspace: int | None = KEYSPACE) -> dict:
    args = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-c", str(clients),
            "-n", str(n), "-P", str(pipeline), "--csv"]
    if keyspace:
        args += ["-r", str(keyspace)]
    args += cmd
    p = subprocess.run(args, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    rows = list(csv.DictReader(io.StringIO(p.stdout)))
    # redis-benchmark 7 exits at the first error reply, so a finished run had none.
    if p.returncode != 0 or not rows:
        raise BenchError(f"redis-benchmark {' '.join(cmd)} failed: {p.stdout[-500:]} {p.stderr[-500:]}")
    row = rows[-1]
    return {
        "rps": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
        "n": n,
        "load1": os.getloadavg()[0],
    }


def sized(warmup: dict, n_max: int) -> int:
    """Requests for a measured run: about RUN_SECS at the warm-up's rate, within bounds."""
    return int(max(min(n_max, 2000), min(n_max, warmup["rps"] * RUN_SECS)))


def check_command(r: Redis, cmd: list[str]) -> None:
    """One call with __rand_int__ filled in: a benchmark must not measure error replies."""
    r.call(*[a.replace("__rand_int__", "000000000001") for a in cmd])


# --------------------------------------------------------------------------------------------
# Statistics and tables.


def med(xs):
    return statistics.median(xs)


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}x"


def spread(xs) -> str:
    return f"{fmt_int(min(xs))} – {fmt_int(max(xs))}"


def table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def rotated(items: list, r: int) -> list:
    k = r % len(items)
    return items[k:] + items[:k]


# --------------------------------------------------------------------------------------------
# 1. Throughput: module commands against INCR and the Lua logs, A B A B.


def load_scripts(r: Redis) -> dict[str, str]:
    return {
        name: r.call("SCRIPT", "LOAD", (LUA / f"{name}.lua").read_text())
        for name in ("zset_log", "stream_log")
    }


def throughput(srv: Server, shas: dict[str, str], res: dict) -> str:
    benches = [
        ("INCR", ["INCR", "b:incr:__rand_int__"]),
        ("RATELIMIT.CHECK, 1 policy", ["RATELIMIT.CHECK", "b:rl1:__rand_int__", LIMIT, WINDOW]),
        ("RATELIMIT.CHECK, 3 policies",
         ["RATELIMIT.CHECK", "b:rl3:__rand_int__", "10", "1000", LIMIT, WINDOW, "1000", "3600000"]),
        # SPEC 8: the same check, replying every policy's state (what the API's tiers send).
        ("RATELIMIT.CHECK, 3 policies, POLICIES",
         ["RATELIMIT.CHECK", "b:rl3p:__rand_int__", "10", "1000", LIMIT, WINDOW, "1000", "3600000",
          "POLICIES"]),
        ("RATELIMIT.PEEK, 1 policy", ["RATELIMIT.PEEK", "b:rl1:__rand_int__", LIMIT, WINDOW]),
        ("METRIC.ADD", ["METRIC.ADD", "b:m:__rand_int__", "42.5"]),
        ("METRIC.SUMMARY", ["METRIC.SUMMARY", "b:m:__rand_int__"]),
        ("Lua sorted-set log (EVALSHA)",
         ["EVALSHA", shas["zset_log"], "1", "b:zs:__rand_int__", LIMIT, WINDOW]),
        ("Lua stream log (EVALSHA)",
         ["EVALSHA", shas["stream_log"], "1", "b:xs:__rand_int__", LIMIT, WINDOW]),
        # Not a target: Redis answering a read with the same reply shape as METRIC.SUMMARY
        # (12 field/value pairs), to tell the cost of the reply from the cost of the command.
        ("HGETALL, 12-field hash (SUMMARY's reply shape)", ["HGETALL", "b:h:__rand_int__"]),
    ]
    names = [b[0] for b in benches]
    # How each benchmark's keys are created before the first measured run: PEEK and SUMMARY
    # read what CHECK and ADD wrote; the hash gets SUMMARY's 12 fields.
    summary_fields = ["count", "10", "sum", "425", "min", "42.5", "max", "42.5", "avg", "42.5",
                      "stddev", "0", "first_ts", "1795456461585", "last_ts", "1795456461585",
                      "p50", "42.5", "p90", "42.5", "p95", "42.5", "p99", "42.5"]
    fills = {
        "RATELIMIT.PEEK, 1 policy": None,
        "METRIC.SUMMARY": None,
        "HGETALL, 12-field hash (SUMMARY's reply shape)": ["HSET", "b:h:__rand_int__", *summary_fields],
    }
    log(f"throughput: prefilling {KEYSPACE:,} keys per benchmark")
    for name, cmd in benches:
        fill = fills.get(name, cmd)
        if fill is None:
            continue
        pipe(srv.port, batched(lambda i, fill=fill: [a.replace("__rand_int__", f"{i:012d}") for a in fill],
                               KEYSPACE), KEYSPACE)
    for _, cmd in benches:
        check_command(srv.r, cmd)

    modes = [("pipelined -P 16", 16, N_PIPE), ("unpipelined -P 1", 1, N_NOPIPE)]
    runs = {m[0]: {n: [] for n in names} for m in modes}
    log("throughput: warm-up (not counted; sizes the runs)")
    n_of = {}
    for mode, P, n in modes:
        for name, cmd in benches:
            n_of[mode, name] = sized(redis_benchmark(srv.port, cmd, max(n // 10, 1000), P), n)
    t0 = time.monotonic()
    for r in range(ROUNDS):
        for mode, P, _ in modes:
            for name, cmd in rotated(benches, r):
                runs[mode][name].append(redis_benchmark(srv.port, cmd, n_of[mode, name], P))
        log(f"throughput: round {r + 1}/{ROUNDS} done ({time.monotonic() - t0:.0f} s)")

    res["throughput"] = runs
    out = []
    for mode, _, n in modes:
        rows = []
        for name in names:
            rps = [x["rps"] for x in runs[mode][name]]
            ratios = [x["rps"] / i["rps"] for x, i in zip(runs[mode][name], runs[mode]["INCR"])]
            p50 = med([x["p50_ms"] for x in runs[mode][name]])
            rows.append([name, fmt_int(med(rps)), spread(rps),
                         f"{100 * (max(rps) - min(rps)) / med(rps):.0f} %",
                         fmt_ratio(med(ratios)), f"{min(ratios):.2f} – {max(ratios):.2f}",
                         f"{p50:.3f}", f"{n_of[mode, name]:,}"])
        out.append(f"**{mode}**, -c {CLIENTS}, -r {KEYSPACE:,}, {ROUNDS} rounds\n\n" + table(
            ["benchmark", "ops/s (median)", "min – max", "spread", "ratio to INCR (median)",
             "ratio range", "p50 ms", "-n"], rows))

    # tally against the Lua logs, per round.
    rows = []
    for mode, _, _ in modes:
        for tally_name in ("RATELIMIT.CHECK, 1 policy", "RATELIMIT.CHECK, 3 policies"):
            for lua in ("Lua sorted-set log (EVALSHA)", "Lua stream log (EVALSHA)"):
                ratios = [a["rps"] / b["rps"] for a, b in zip(runs[mode][tally_name], runs[mode][lua])]
                res.setdefault("vs_lua", {})[f"{mode}|{tally_name}|{lua}"] = med(ratios)
                rows.append([mode, tally_name, lua, fmt_ratio(med(ratios)),
                             f"{min(ratios):.2f} – {max(ratios):.2f}"])
    out.append("**tally against the Lua logs** (ratio of ops/s within each round)\n\n" + table(
        ["mode", "tally", "against", "ratio (median)", "range"], rows))
    return "\n\n".join(out)


# --------------------------------------------------------------------------------------------
# 2. Memory.


def memory(srv: Server, shas: dict[str, str], res: dict) -> str:
    r = srv.r
    mem = res.setdefault("memory", {})
    big = ("1000000000", "3600000")  # a limit never reached, a window nothing leaves
    kinds = {
        "tally RATELIMIT.CHECK": lambda key: ("RATELIMIT.CHECK", key) + big,
        "Lua sorted-set log": lambda key: ("EVALSHA", shas["zset_log"], "1", key) + big,
        "Lua stream log": lambda key: ("EVALSHA", shas["stream_log"], "1", key) + big,
    }

    # The first call of a command allocates for good: its latency histogram (~24 KB, Redis 7
    # latency-tracking) and, for the first EVALSHA, ~200 KB for Lua. Call everything once first.
    for i, mk in enumerate(kinds.values()):
        pipe(srv.port, repeated(mk(f"mem:warmup:{i}"), 10), 10)
    for cmd in (("METRIC.ADD", "mem:warmup:m", "1"), ("SET", "mem:warmup:s", "1234567"),
                ("PEXPIRE", "mem:warmup:s", WINDOW), ("DBSIZE",), ("MEMORY", "USAGE", "mem:warmup:s"),
                ("FLUSHALL", "SYNC")):
        pipe(srv.port, repeated(cmd, 2), 2)
        r.call(*cmd)

    def empty_db() -> int:
        """FLUSHALL, then one unrelated key (the first key after a flush also allocates the
        keyspace's tables, ~1 KB, which must not be charged to what is measured); returns
        the settled used_memory."""
        r.call("FLUSHALL", "SYNC")
        r.call("SET", "mem:sentinel", "1234567")
        return r.settled_used_memory(0.3)

    # Something else is allocated once on the first measurement (~1 KB): a throwaway pass.
    for mk in kinds.values():
        empty_db()
        pipe(srv.port, repeated(mk("mem:log"), 100), 100)

    # One key holding N recorded requests.
    rows = []
    for name, mk in kinds.items():
        for n in (100, 1000, 10_000):
            before = empty_db()
            pipe(srv.port, repeated(mk("mem:log"), n), n)
            delta = r.settled_used_memory(0.2) - before
            usage = r.call("MEMORY", "USAGE", "mem:log", "SAMPLES", "0")
            mem[f"log|{name}|{n}"] = {"memory_usage": usage, "used_memory_delta": delta}
            rows.append([name, f"{n:,}", fmt_int(usage), f"{usage / n:.1f}",
                         f"{delta / n:.1f}"])
    out = ["**One key, N recorded requests** (filled with limit 1e9, window 1 h; "
           "`MEMORY USAGE key SAMPLES 0`; used_memory delta includes allocator rounding)\n\n"
           + table(["log", "entries", "MEMORY USAGE (B)", "B / request (MEMORY USAGE)",
                    "B / request (used_memory delta)"], rows)]

    # 10,000 keys of 10 entries each, all told: used_memory delta / keys.
    keys, per = 10_000, 10
    variants = {
        "Redis baseline: SET k <int> + PEXPIRE k 60000 (1 command each)": None,
        "tally RATELIMIT.CHECK k 100 60000 (x10)": lambda k: ("RATELIMIT.CHECK", k, LIMIT, WINDOW),
        "Lua sorted-set log k 100 60000 (x10)":
            lambda k: ("EVALSHA", shas["zset_log"], "1", k, LIMIT, WINDOW),
        "Lua stream log k 100 60000 (x10)":
            lambda k: ("EVALSHA", shas["stream_log"], "1", k, LIMIT, WINDOW),
        "tally METRIC.ADD k 42.5 (x10): a metric series": lambda k: ("METRIC.ADD", k, "42.5"),
    }
    rows = []
    for name, mk in variants.items():
        before = empty_db()
        if mk is None:
            cmds = batched(lambda i: ("SET", f"k:{i:012d}", 1_000_000 + i), keys)
            pipe(srv.port, cmds, keys)
            pipe(srv.port, batched(lambda i: ("PEXPIRE", f"k:{i:012d}", WINDOW), keys), keys)
        else:
            pipe(srv.port, batched(lambda i: mk(f"k:{i // per:012d}"), keys * per), keys * per)
        delta = r.settled_used_memory(1.0) - before
        usage = [r.call("MEMORY", "USAGE", f"k:{i:012d}", "SAMPLES", "0") for i in range(0, keys, 100)]
        if r.call("DBSIZE") != keys + 1:
            raise BenchError(f"memory: expected {keys} keys for {name}")
        mem[f"keys|{name}"] = {"per_key_delta": delta / keys, "memory_usage_avg": med(usage)}
        rows.append([name, f"{delta / keys:.1f}", f"{med(usage):.0f}"])
    out.append(f"**{keys:,} keys of {per} entries each, all told** (INFO used_memory delta / {keys:,}; "
               "MEMORY USAGE median over 100 of the keys)\n\n"
               + table(["what", "B per key (used_memory delta)", "MEMORY USAGE per key (B)"], rows))

    # One metric series fed at a steady rate for the whole retention, timestamps spread with
    # TS (SPEC 5: <= 32 KiB at 1 sample/s, <= 256 KiB at any rate, default retention).
    got = r.call("CONFIG", "GET", "tally.retention-ms")
    retention = int(got[1]) if got else 3_600_000
    rates = (1, 100, 1000) if not QUICK else (1, 100)
    span_ms = retention if not QUICK else 120_000
    rows = []
    for rate in rates:
        before = empty_db()
        key = f"mem:series:{rate}"
        sec, usec = r.call("TIME")
        now = int(sec) * 1000 + int(usec) // 1000
        count = rate * span_ms // 1000
        log(f"memory: series fed {rate}/s for {span_ms // 1000} s ({count:,} samples)")
        pipe(srv.port, series_feed(key, now - span_ms, 1000 / rate, count), count)
        delta = r.settled_used_memory(0.3) - before
        usage = r.call("MEMORY", "USAGE", key, "SAMPLES", "0")
        mem[f"series|{rate}"] = {"memory_usage": usage, "used_memory_delta": delta,
                                 "samples": count}
        rows.append([f"{rate}/s", f"{count:,}", f"{usage / 1024:.1f}", f"{delta / 1024:.1f}"])
    out.append(f"**One metric series fed at a steady rate for {span_ms // 1000:,} s** "
               f"(retention {retention:,} ms; values uniform in 0..100, 2 decimals; "
               "timestamps given with TS)\n\n"
               + table(["rate", "samples", "MEMORY USAGE (KiB)", "used_memory delta (KiB)"], rows))
    r.call("FLUSHALL", "SYNC")
    return "\n\n".join(out)


def series_feed(key: str, start_ms: int, step_ms: float, count: int, batch: int = 20_000):
    """RESP for `METRIC.ADD key <value> TS <ts>` x count, values pseudo-random in 0..100."""
    k = key.encode()
    head = b"*5\r\n$10\r\nMETRIC.ADD\r\n$%d\r\n%s\r\n" % (len(k), k)
    x = 12345
    buf = []
    for i in range(count):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        v = b"%d.%02d" % (x % 100, (x >> 8) % 100)
        ts = b"%d" % (start_ms + int(i * step_ms))
        buf.append(b"%s$%d\r\n%s\r\n$2\r\nTS\r\n$%d\r\n%s\r\n" % (head, len(v), v, len(ts), ts))
        if len(buf) == batch:
            yield b"".join(buf)
            buf = []
    if buf:
        yield b"".join(buf)


# --------------------------------------------------------------------------------------------
# 3. Scaling: the cost of a call must not grow with the data behind the key.


def scaling(srv: Server, res: dict) -> str:
    r = srv.r
    r.call("FLUSHALL", "SYNC")
    sc = res.setdefault("scaling", {})
    n_small, n_large = (10**3, 10**6) if not QUICK else (10**3, 10**5)

    log(f"scaling: feeding series of {n_small:,} and {n_large:,} samples")

    def feed(key: str, values: tuple, count: int) -> None:
        block = b"".join(Redis.encode("METRIC.ADD", key, v) for v in values)
        per = 10_000 // len(values)
        full, rest = divmod(count // len(values), per)
        pipe(srv.port, [block * per for _ in range(full)] + [block * rest], count)

    positive = ("1.5", "42", "97.25", "63")
    feed("sc:m:small", positive, n_small)
    feed("sc:m:large", positive, n_large)
    # The same 1,000 samples but one value in four negative: the quantile sketch then spans
    # both signs.
    feed("sc:m:mixed", ("1.5", "42", "97.25", "-3"), n_small)
    mu = {k: r.call("MEMORY", "USAGE", k) for k in ("sc:m:small", "sc:m:large", "sc:m:mixed")}
    sc["series_memory_usage"] = mu

    # Rate-limit logs. Big limit (always allowed) and 1 h window (nothing leaves): entries only
    # accumulate. Each run starts from a fresh COPY of a template (10 or 100,000 entries) plus
    # one CHECK per key, and the logs grow by n / keys during it. That one CHECK is where the
    # copy (whose capacity is exactly its length) regrows its storage: in a log that grew by
    # appends this doubling is amortized over the appends, so it must not land in the run.
    lkeys = 1000 if not QUICK else 20
    l_small, l_large = 10, 100_000
    big = ("1000000000", "3600000")
    log(f"scaling: building rate-limit logs of {l_small} and {l_large:,} entries x {lkeys} keys")
    pipe(srv.port, repeated(("RATELIMIT.CHECK", "sc:tpl:small") + big, l_small), l_small)
    pipe(srv.port, repeated(("RATELIMIT.CHECK", "sc:tpl:large") + big, l_large), l_large)
    # Full logs (limit == entries): CHECK is denied, records nothing, so the size stays put.
    r.call("COPY", "sc:tpl:small", "sc:full:small")
    r.call("COPY", "sc:tpl:large", "sc:full:large")

    def reset_logs(size: str) -> None:
        cmds = batched(lambda i: ("COPY", f"sc:tpl:{size}", f"sc:rl:{size}:{i:012d}", "REPLACE"), lkeys)
        pipe(srv.port, cmds, lkeys)
        cmds = batched(lambda i: ("RATELIMIT.CHECK", f"sc:rl:{size}:{i:012d}") + big, lkeys)
        pipe(srv.port, cmds, lkeys)

    n_allowed = 100 * lkeys
    n_lat = 20_000 if not QUICK else 2000
    samples = f"{n_small:,} / {n_large:,} samples"
    entries = f"{l_small} / {l_large:,} entries"
    # name -> (what small / large are, side -> (command, max requests, -P, -c, -r, reset))
    pairs = {
        "METRIC.SUMMARY, -P 16 ops/s": (
            samples, lambda s: (["METRIC.SUMMARY", f"sc:m:{s}"], N_PIPE, 16, CLIENTS, None, False)),
        "METRIC.SUMMARY, -c 1 -P 1 p50 latency": (
            samples, lambda s: (["METRIC.SUMMARY", f"sc:m:{s}"], n_lat, 1, 1, None, False)),
        "METRIC.SUMMARY, values of one sign / both signs, -P 16 ops/s": (
            f"{n_small:,} samples each",
            lambda s: (["METRIC.SUMMARY", "sc:m:small" if s == "small" else "sc:m:mixed"],
                       N_PIPE, 16, CLIENTS, None, False)),
        f"RATELIMIT.CHECK allowed (limit 1e9), {lkeys} keys, -P 16 ops/s": (
            entries + f" (+{n_allowed // lkeys} per key during a run)",
            lambda s: (["RATELIMIT.CHECK", f"sc:rl:{s}:__rand_int__", *big], n_allowed, 16, CLIENTS,
                       lkeys, True)),
        "RATELIMIT.CHECK denied on a full log (limit = entries), -P 16 ops/s": (
            entries,
            lambda s: (["RATELIMIT.CHECK", f"sc:full:{s}", str(l_small if s == "small" else l_large),
                        "3600000"], N_PIPE, 16, CLIENTS, None, False)),
        "RATELIMIT.PEEK on a full log (limit 1e9), -P 16 ops/s": (
            entries, lambda s: (["RATELIMIT.PEEK", f"sc:full:{s}", *big], N_PIPE, 16, CLIENTS, None, False)),
    }
    # The denied CHECK must really be denied, or the test means nothing.
    if r.call("RATELIMIT.CHECK", "sc:full:large", str(l_large), "3600000")[0] != 0:
        raise BenchError("scaling: CHECK on the full log was allowed")

    # Warm-up (not counted): checks each command and sizes its runs, the same n for both sides.
    n_of = {}
    for name, (_, mk) in pairs.items():
        warm = []
        for side in ("small", "large"):
            cmd, n_max, P, c, ks, reset = mk(side)
            if reset:
                reset_logs(side)
            else:
                check_command(r, cmd)
            warm.append(redis_benchmark(srv.port, cmd, max(n_max // 10, 1000), P, clients=c, keyspace=ks))
        n_of[name] = n_max if reset else sized(min(warm, key=lambda w: w["rps"]), n_max)

    results = {name: {"small": [], "large": []} for name in pairs}
    jobs = [(name, s) for name in pairs for s in ("small", "large")]
    t0 = time.monotonic()
    for rnd in range(ROUNDS):
        for name, side in rotated(jobs, rnd):
            cmd, _, P, c, ks, reset = pairs[name][1](side)
            if reset:
                reset_logs(side)
            results[name][side].append(
                redis_benchmark(srv.port, cmd, n_of[name], P, clients=c, keyspace=ks))
        log(f"scaling: round {rnd + 1}/{ROUNDS} done ({time.monotonic() - t0:.0f} s)")
    sc["runs"] = results

    rows = []
    for name, (sizes, _) in pairs.items():
        lat = "latency" in name
        key = "p50_ms" if lat else "rps"
        small = [x[key] for x in results[name]["small"]]
        large = [x[key] for x in results[name]["large"]]
        ratios = [a / b for a, b in zip(large, small)]
        f = (lambda x: f"{x:.3f} ms") if lat else fmt_int
        rows.append([name, sizes, f(med(small)), f(med(large)), f"{med(ratios):.2f}",
                     f"{min(ratios):.2f} – {max(ratios):.2f}", f"{n_of[name]:,}"])
        sc[name] = med(ratios)
    out = table(["measure", "small / large", "small (median)", "large (median)",
                 "large / small (median)", "range", "-n"], rows)
    out += (f"\n\nMEMORY USAGE of the series: {mu['sc:m:small']} B at {n_small:,} samples, "
            f"{mu['sc:m:large']} B at {n_large:,} samples, {mu['sc:m:mixed']} B at {n_small:,} "
            "samples of both signs.")
    r.call("FLUSHALL", "SYNC")
    return out


# --------------------------------------------------------------------------------------------
# 4. HTTP: the API under wrk, beside redis-benchmark's ceiling, same run.

WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def wrk(url: str, script: Path | None) -> dict:
    args = ["wrk", "-t2", "-c64", f"-d{HTTP_SECS}s", "--timeout", "2s", "--latency"]
    if script:
        args += ["-s", str(script)]
    p = subprocess.run(args + [url], capture_output=True, text=True, timeout=HTTP_SECS + 60)
    out = p.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if p.returncode != 0 or not m:
        raise BenchError(f"wrk failed: {out[-800:]} {p.stderr[-300:]}")
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        lat[pct] = float(val) * WRK_UNITS[unit]
    total = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errs = re.search(r"Socket errors: (.*)", out)
    return {"rps": float(m.group(1)), "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
            "requests": total, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errs.group(1) if errs else ""}


# SPEC 8: a keyed tier of three policies (each far above what a run sends), every POST one
# RATELIMIT.CHECK ... POLICIES, for "POST /api/metrics, 3-policy keyed tier".
POLICY_FILE = """[policies]
second = { limit = 1000000000, window = "1s" }
minute = { limit = 1000000000, window = "1m" }
hour   = { limit = 1000000000, window = "1h" }

[tiers.anonymous]

[tiers.bench]
ingest = ["second", "minute", "hour"]
"""


def keyed_api(api: Path, srv: Server) -> tuple[dict, Path]:
    """The API's extra environment for the keyed tier, and a wrk script sending its key."""
    policies = WORK / "policies.toml"
    policies.write_text(POLICY_FILE)
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{srv.port}", POLICY_FILE=str(policies))
    p = subprocess.run([str(api), "keys", "create", "--tier", "bench", "--name", "bench"],
                       env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    if p.returncode != 0 or not p.stdout.strip():
        raise BenchError(f"tally-api keys create failed: {p.stderr.strip()}")
    key = p.stdout.splitlines()[0].strip()
    script = WORK / "post_metric_keyed.lua"
    script.write_text((WRK / "post_metric.lua").read_text()
                      + f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    return {"POLICY_FILE": str(policies)}, script


def start_api(api: Path, srv: Server, name: str, extra: dict) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    api_log = WORK / f"{name}.log"
    env = dict(os.environ, REDIS_URL=f"redis://127.0.0.1:{srv.port}", HOST="127.0.0.1",
               PORT=str(port), RATE_LIMIT="1000000000", RATE_WINDOW="60", RUST_LOG="warn",
               **extra)
    with open(api_log, "wb") as f:
        proc = spawn([str(api)], env=env, stdout=f, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", api_log


class DashboardPoller:
    """The requests one open `/dashboard` page makes (frontend/static/dashboard.js), every
    POLL_S: the type list, each type's 15-minute summary and 10 s series, the limiter's
    decisions and top clients, the breaker. Replayed from a thread so that the API's cost of a
    page is measured without the browser's own rendering (on the viewer's machine in practice)."""

    POLL_S = 1.5

    def __init__(self, base: str):
        self.base, self.stop_flag, self.requests, self.errors = base, threading.Event(), 0, 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def get(self, path: str):
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as resp:
                body = resp.read()
                self.requests += 1
                return json.loads(body)
        except (urllib.error.URLError, OSError, ValueError):
            self.errors += 1
            return None

    def run(self) -> None:
        while not self.stop_flag.is_set():
            started = time.monotonic()
            frm = dt.datetime.fromtimestamp(time.time() - 900, dt.timezone.utc)
            frm = frm.strftime("%Y-%m-%dT%H:%M:%SZ")
            types = (self.get("/api/metrics/types") or {}).get("types", [])
            for t in types:
                q = urllib.parse.quote(t)
                self.get(f"/api/metrics/summary?metric_type={q}&window=900")
                self.get(f"/api/metrics/series?metric_type={q}&from={frm}&bucket=10")
            self.get("/api/ratelimit/decisions?window=900&bucket=10")
            self.get("/api/ratelimit/top?window=900&limit=10")
            self.get("/external/state")
            self.stop_flag.wait(max(0.0, self.POLL_S - (time.monotonic() - started)))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_flag.set()
        self.thread.join(timeout=10)


def http(srv: Server, api_src: Path, res: dict) -> str:
    if not api_src.exists():
        msg = f"skipped: build the API (`cargo build --release -p tally-api`; {api_src} is missing)"
        log(f"http: {msg}")
        res["http"] = {"skipped": msg}
        return msg
    api = WORK / "tally-api"
    shutil.copy2(api_src, api)
    proc, base, api_log = start_api(api, srv, "api", {})
    keyed_env, keyed_script = keyed_api(api, srv)
    keyed_proc, keyed_base, keyed_log = start_api(api, srv, "api-keyed", keyed_env)
    try:
        for p, b, lg in ((keyed_proc, keyed_base, keyed_log),):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and p.poll() is None:
                try:
                    with urllib.request.urlopen(b + "/health", timeout=2) as resp:
                        if resp.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.2)
            else:
                raise BenchError(f"the keyed API did not start: {lg.read_text(errors='replace')[-800:]}")
        deadline, healthy, why = time.monotonic() + 20, False, ""
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                why = f"the API exited with status {proc.returncode}"
                break
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as resp:
                    healthy = resp.status == 200
                    if healthy:
                        break
            except (urllib.error.URLError, OSError) as e:
                why = str(e)
            time.sleep(0.2)
        if not healthy:
            tail = api_log.read_text(errors="replace")[-1500:]
            msg = f"skipped: the API did not become healthy on {base}/health ({why})"
            log(f"http: {msg}\n{tail}")
            res["http"] = {"skipped": msg, "log": tail}
            return msg + (f"\n\n```\n{tail.strip()}\n```" if tail.strip() else "")

        def with_dashboard() -> dict:
            with DashboardPoller(base) as poller:
                out = wrk(base + "/api/metrics", WRK / "post_metric.lua")
            if poller.errors or not poller.requests:
                raise BenchError(f"dashboard poller: {poller.requests} requests, "
                                 f"{poller.errors} errors")
            out["dashboard_requests"] = poller.requests
            return out

        # One real request of each kind must succeed before measuring.
        body = (WRK / "post_metric.lua").read_text().split("wrk.body = '")[1].split("'")[0]
        req = urllib.request.Request(base + "/api/metrics", data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            if resp.status != 201:
                raise BenchError(f"POST /api/metrics answered {resp.status}")
        with urllib.request.urlopen(base + "/api/metrics/summary?metric_type=cpu", timeout=5) as resp:
            if resp.status != 200:
                raise BenchError(f"GET summary answered {resp.status}")

        jobs = {
            "redis-benchmark -c 64 -P 1 METRIC.ADD (ceiling)":
                lambda: redis_benchmark(srv.port, ["METRIC.ADD", "b:http:ceiling", "75"],
                                        N_NOPIPE, 1, clients=64, keyspace=None),
            "POST /api/metrics": lambda: wrk(base + "/api/metrics", WRK / "post_metric.lua"),
            "POST /api/metrics, 3-policy keyed tier":
                lambda: wrk(keyed_base + "/api/metrics", keyed_script),
            "POST /api/metrics, a dashboard open": lambda: with_dashboard(),
            "GET /api/metrics/summary?metric_type=cpu":
                lambda: wrk(base + "/api/metrics/summary?metric_type=cpu", None),
        }
        names = list(jobs)
        runs = {n: [] for n in names}
        rounds = max(3, ROUNDS // 2) if not QUICK else 1
        for rnd in range(rounds):
            for name in rotated(names, rnd):
                runs[name].append(jobs[name]())
            log(f"http: round {rnd + 1}/{rounds} done")
        res["http"] = runs
        ceiling = runs[names[0]]
        rows = []
        for name in names:
            rps = [x["rps"] for x in runs[name]]
            ratios = [x["rps"] / c["rps"] for x, c in zip(runs[name], ceiling)]
            non2xx = sum(x.get("non_2xx", 0) for x in runs[name])
            reqs = sum(x.get("requests", 0) for x in runs[name])
            rows.append([name, fmt_int(med(rps)), spread(rps), fmt_ratio(med(ratios)),
                         f"{med([x['p50_ms'] for x in runs[name]]):.2f}",
                         f"{med([x['p99_ms'] for x in runs[name]]):.2f}",
                         f"{non2xx:,} of {reqs:,}" if reqs else "–"])
            res.setdefault("http_summary", {})[name] = {
                "rps": med(rps), "ratio": med(ratios),
                "p99_ms": med([x["p99_ms"] for x in runs[name]]), "non_2xx": non2xx}
        plain, dash = runs["POST /api/metrics"], runs["POST /api/metrics, a dashboard open"]
        costs = [1 - d["rps"] / p["rps"] for p, d in zip(plain, dash)]
        polled = sum(d.get("dashboard_requests", 0) for d in dash)
        res["http_summary"]["dashboard_cost"] = med(costs)
        cost = (f"\n\nOne open dashboard (its requests replayed every {DashboardPoller.POLL_S} s, "
                f"{polled:,} in all) costs {med(costs) * 100:+.1f}% of the POST throughput "
                f"(median of the per-round differences; range {min(costs) * 100:+.1f}% to "
                f"{max(costs) * 100:+.1f}%; the target is under 1%).")
        return (f"64 connections (wrk -t2 -c64 -d{HTTP_SECS}s --latency; redis-benchmark -c 64 -P 1 "
                f"-n {N_NOPIPE:,}), {rounds} rounds, API with RATE_LIMIT=1000000000\n\n"
                + table(["load", "req/s (median)", "min – max", "ratio to ceiling", "p50 ms",
                         "p99 ms", "non-2xx"], rows) + cost)
    finally:
        stop(proc)
        stop(keyed_proc)


# --------------------------------------------------------------------------------------------
# Targets and the report.


def targets(res: dict) -> str:
    rows = []

    def add(name, value, ok, shown):
        rows.append([name, shown, "met" if ok else "**missed**"])
        res.setdefault("targets", {})[name] = {"value": value, "met": ok}

    tp = res.get("throughput")
    if tp:
        P = "pipelined -P 16"

        def ratio(a, b, mode=P):
            return med([x["rps"] / y["rps"] for x, y in zip(tp[mode][a], tp[mode][b])])

        c1 = "RATELIMIT.CHECK, 1 policy"
        v = ratio(c1, "INCR")
        add("RATELIMIT.CHECK (1 policy) >= 0.8x INCR, pipelined", v, v >= 0.8, fmt_ratio(v))
        v = ratio(c1, "Lua sorted-set log (EVALSHA)")
        add("RATELIMIT.CHECK (1 policy) >= 5x the sorted-set Lua log, pipelined", v, v >= 5, fmt_ratio(v))
        v = ratio(c1, "Lua stream log (EVALSHA)")
        add("RATELIMIT.CHECK (1 policy) >= 4x the stream Lua log, pipelined", v, v >= 4, fmt_ratio(v))
        v = ratio("METRIC.ADD", "INCR")
        add("METRIC.ADD >= 0.8x INCR, pipelined", v, v >= 0.8, fmt_ratio(v))
        v = ratio("METRIC.SUMMARY", "INCR")
        add("METRIC.SUMMARY >= 0.9x INCR, pipelined", v, v >= 0.9, fmt_ratio(v))
    sc = res.get("scaling")
    if sc:
        v = sc["METRIC.SUMMARY, -P 16 ops/s"]
        add("METRIC.SUMMARY flat from 1e3 to 1e6 samples (1e6/1e3 ops/s >= 0.9)", v, v >= 0.9,
            f"{v:.2f}")
    mem = res.get("memory")
    if mem:
        m = mem["log|tally RATELIMIT.CHECK|1000"]
        v = m["memory_usage"] / 1000
        add("<= 8 B per recorded request, 1,000-entry log (MEMORY USAGE)", v, v <= 8, f"{v:.1f} B")
        v = mem["keys|tally RATELIMIT.CHECK k 100 60000 (x10)"]["per_key_delta"]
        add("<= 180 B per key all told, 10,000 keys x 10 entries", v, v <= 180, f"{v:.0f} B")
        if not QUICK and "series|1" in mem:
            v = mem["series|1"]["memory_usage"] / 1024
            add("SPEC 5: series <= 32 KiB fed 1 sample/s for the retention", v, v <= 32, f"{v:.1f} KiB")
            v = max(m["memory_usage"] for k, m in mem.items() if k.startswith("series|")) / 1024
            add("SPEC 5: series <= 256 KiB at any rate (1, 100, 1000/s)", v, v <= 256, f"{v:.1f} KiB")
    hs = res.get("http_summary")
    if hs:
        post = hs["POST /api/metrics"]
        add("POST /api/metrics >= 0.5x redis-benchmark -P 1 ceiling, 64 connections",
            post["ratio"], post["ratio"] >= 0.5, fmt_ratio(post["ratio"]))
        add("POST /api/metrics p99 <= 10 ms", post["p99_ms"], post["p99_ms"] <= 10,
            f"{post['p99_ms']:.2f} ms")
        keyed = hs.get("POST /api/metrics, 3-policy keyed tier")
        if keyed:
            add("POST /api/metrics, 3-policy keyed tier >= 0.45x the -P 1 ceiling",
                keyed["ratio"], keyed["ratio"] >= 0.45, fmt_ratio(keyed["ratio"]))
    elif "http" in res:
        rows.append(["API targets", res["http"].get("skipped", "not run"), "not measured"])
    return table(["target", "measured (median)", "status"], rows)


def sh(*args) -> str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def machine() -> dict:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "redis": sh("redis-server", "--version"),
        "wrk": sh("wrk", "--version").splitlines()[0] if shutil.which("wrk") else "missing",
        "git": sh("git", "-C", str(ROOT), "describe", "--always", "--dirty"),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


def main() -> int:
    module_src = Path(os.environ.get("TALLY_MODULE", ROOT / "target/release/libtally.so"))
    api_src = Path(os.environ.get("TALLY_API", ROOT / "target/release/tally-api"))
    if not module_src.exists():
        print(f"bench: {module_src} is missing: cargo build --release -p tally", file=sys.stderr)
        return 1
    for tool in ("redis-server", "redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            print(f"bench: {tool} is missing (make deps)", file=sys.stderr)
            return 1

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    outdir = ROOT / "bench-results" / stamp
    outdir.mkdir(parents=True, exist_ok=True)
    latest = ROOT / "bench-results" / "latest"
    if latest.is_symlink() or latest.exists():
        latest.unlink()
    latest.symlink_to(stamp)

    # The lead rebuilds the module at times: load a private copy.
    module = WORK / "libtally.so"
    shutil.copy2(module_src, module)
    res: dict = {"machine": machine(), "config": {
        "rounds": ROUNDS, "n_pipe": N_PIPE, "n_nopipe": N_NOPIPE, "clients": CLIENTS,
        "keyspace": KEYSPACE, "http_secs": HTTP_SECS, "quick": QUICK,
        "module_sha256": hashlib.sha256(module.read_bytes()).hexdigest()[:16]}}
    m = res["machine"]
    log(f"{m['nproc']} CPUs ({m['cpu']}), kernel {m['kernel']}, {m['redis']}")
    log(f"results: {outdir}")

    sections: list[tuple[str, str]] = []
    t_start = time.monotonic()
    srv = Server(module)
    try:
        shas = load_scripts(srv.r)
        if "throughput" in SECTIONS:
            sections.append(("Throughput", throughput(srv, shas, res)))
            srv.r.call("FLUSHALL", "SYNC")
        if "memory" in SECTIONS:
            log("memory")
            sections.append(("Memory", memory(srv, shas, res)))
        if "scaling" in SECTIONS:
            sections.append(("Scaling", scaling(srv, res)))
        if "http" in SECTIONS:
            log("http")
            srv.r.call("FLUSHALL", "SYNC")
            sections.append(("HTTP", http(srv, api_src, res)))
    finally:
        srv.close()
    m["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    res["elapsed_s"] = round(time.monotonic() - t_start)

    md = [f"# tally benchmark run {m['date']}\n",
          f"{m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}; {m['redis']}; git {m['git']}; "
          f"load average {' '.join(m['loadavg_start'])} at the start, "
          f"{' '.join(m['loadavg_end'])} at the end; {res['elapsed_s']} s.\n",
          f"Config: {json.dumps(res['config'])}\n"]
    for title, body in sections:
        md.append(f"## {title}\n\n{body}\n")
    md.append(f"## Targets\n\n{targets(res)}\n")
    text = "\n".join(md)
    (outdir / "results.md").write_text(text)
    (outdir / "raw.json").write_text(json.dumps(res, indent=1))
    print("\n" + text)
    log(f"wrote {outdir}/results.md and raw.json")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
    finally:
        stop_all()
