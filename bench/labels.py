#!/usr/bin/env python3
"""Labels benchmark (`make bench`, section `labels`): the API's latency for a summary merged
over 100 series of one type (1 h of data each, 1 sample/s), a filtered one, a grouped summary
and a grouped series query, on a single node and on a 3-primary cluster, side by side with the
summary of one untagged series holding the same hour.

Starts its own redis-server processes (the module from target/release/libtally.so, copied) and
tally-api processes on free loopback ports in a temp dir; stops them at the end. Knobs:
BENCH_LABELS_SERIES (100), BENCH_LABELS_REQUESTS (200 per query), BENCH_WORK (the temp dir
scripts/bench.sh made; a new one otherwise). Prints a Markdown table and writes it to
bench-results/latest/labels.md when that directory exists.
"""

import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERIES = int(os.environ.get("BENCH_LABELS_SERIES", "100"))
REQUESTS = int(os.environ.get("BENCH_LABELS_REQUESTS", "200"))
HOUR_S = 3600
PROCS: list[subprocess.Popen] = []


def free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in (6379, 8000):
            return port


def resp(*args) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class Conn:
    """A minimal RESP2 client: one call, or a pipeline whose replies are counted."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.f = self.sock.makefile("rb")

    def reply(self):
        line = self.f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)[:-2]
            return data.decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return [self.reply() for _ in range(max(n, 0))]
        raise RuntimeError(f"unexpected {line!r}")

    def call(self, *args):
        self.sock.sendall(resp(*args))
        return self.reply()

    def pipeline(self, payload: bytes, n: int) -> None:
        self.sock.sendall(payload)
        for _ in range(n):
            self.reply()


def start_redis(work: Path, module: Path, cluster: bool) -> int:
    port = free_port()
    d = work / f"redis-{port}"
    d.mkdir()
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(d),
            "--save", "", "--appendonly", "no", "--loadmodule", str(module)]
    if cluster:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    PROCS.append(subprocess.Popen(args, stdout=open(d / "log", "wb"), stderr=subprocess.STDOUT))
    for _ in range(100):
        try:
            Conn(port).call("PING")
            return port
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis-server on {port} did not start")


def start_api(work: Path, env: dict) -> int:
    port = free_port()
    e = dict(os.environ, HOST="127.0.0.1", PORT=str(port), RATE_LIMIT="1000000000",
             RUST_LOG="warn", **env)
    PROCS.append(subprocess.Popen([str(ROOT / "target/release/tally-api")], env=e,
                                  stdout=open(work / f"api-{port}.log", "wb"),
                                  stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return port
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"tally-api on {port} did not become healthy")


def escape(s: str) -> str:
    return "".join(f"%{ord(c):02X}" if c <= " " or c == "\x7f" or c in "%|,={}" else c
                   for c in s)


def feed(ports: list[int], now_ms: int) -> None:
    """100 tagged series of `lat` and one untagged series `single`, 1 h at 1 sample/s, and
    the series index, written where each key's slot lives."""
    conns = {p: Conn(p) for p in ports}
    owner = {}
    if len(ports) > 1:
        for start, end, master, *_ in conns[ports[0]].call("CLUSTER", "SLOTS"):
            for slot in range(int(start), int(end) + 1):
                owner[slot] = int(master[1])

    def route(key: str) -> Conn:
        if not owner:
            return conns[ports[0]]
        return conns[owner[int(conns[ports[0]].call("CLUSTER", "KEYSLOT", key))]]

    regions = ["eu", "us", "ap"]
    keys = [("single", "metric:single")]
    members = []
    for h in range(SERIES):
        member = f"host=h{h:03d},region={regions[h % 3]}"
        members.append(member)
        keys.append((member, f"series:lat|{member}"))
    start = now_ms - HOUR_S * 1000
    for i, (_, key) in enumerate(keys):
        x = 12345 + i
        buf = []
        for s in range(HOUR_S):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
            buf.append(resp("METRIC.ADD", key, f"{x % 100}.{(x >> 8) % 100:02d}", "TS",
                            start + s * 1000))
        route(key).pipeline(b"".join(buf), HOUR_S)
    index = f"tally:series:{escape('lat')}"
    route(index).call("SADD", index, *members)
    for c in conns.values():
        c.sock.close()


def measure(port: int, path: str) -> dict:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(10):
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {body[:200]!r}")
    times = []
    t0 = time.perf_counter()
    for _ in range(REQUESTS):
        t = time.perf_counter()
        c.request("GET", path)
        c.getresponse().read()
        times.append((time.perf_counter() - t) * 1000)
    total = time.perf_counter() - t0
    times.sort()
    return {"median_ms": statistics.median(times),
            "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))],
            "rps": REQUESTS / total, "bytes": len(body)}


QUERIES = [
    ("summary of one untagged series (1 h)", "/api/metrics/summary?metric_type=single"),
    (f"summary merged over {SERIES} series", "/api/metrics/summary?metric_type=lat"),
    ("summary, filter tag.region=eu", "/api/metrics/summary?metric_type=lat&tag.region=eu"),
    ("summary, window 300 s", "/api/metrics/summary?metric_type=lat&window=300"),
    ("summary, group_by=host", "/api/metrics/summary?metric_type=lat&group_by=host"),
    ("series 1 h / 60 s, one untagged series", "/api/metrics/series?metric_type=single"),
    (f"series 1 h / 60 s merged over {SERIES} series", "/api/metrics/series?metric_type=lat"),
    ("series 1 h / 60 s, group_by=region", "/api/metrics/series?metric_type=lat&group_by=region"),
]


def run(work: Path) -> str:
    module = work / "libtally-labels.so"
    shutil.copy2(ROOT / "target/release/libtally.so", module)
    now_ms = int(time.time() * 1000)
    results = {}
    # Single node.
    single = start_redis(work, module, False)
    feed([single], now_ms)
    api = start_api(work, {"REDIS_URL": f"redis://127.0.0.1:{single}"})
    results["single node"] = {name: measure(api, path) for name, path in QUERIES}
    # 3-primary cluster.
    nodes = [start_redis(work, module, True) for _ in range(3)]
    subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in nodes],
                    "--cluster-yes"], check=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while "cluster_state:ok" not in Conn(nodes[0]).call("CLUSTER", "INFO"):
        if time.monotonic() > deadline:
            raise RuntimeError("the cluster did not become ok")
        time.sleep(0.2)
    time.sleep(1)
    feed(nodes, now_ms)
    api = start_api(work, {"REDIS_CLUSTER": "true",
                           "REDIS_URL": ",".join(f"redis://127.0.0.1:{p}" for p in nodes)})
    results["3-primary cluster"] = {name: measure(api, path) for name, path in QUERIES}

    head = "| query | " + " | ".join(
        f"{d}: median ms | {d}: p99 ms | {d}: req/s" for d in results) + " |"
    rows = [head, "|---" * (1 + 3 * len(results)) + "|"]
    for name, _ in QUERIES:
        cells = []
        for d in results:
            m = results[d][name]
            cells += [f"{m['median_ms']:.2f}", f"{m['p99_ms']:.2f}", f"{m['rps']:.0f}"]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return (f"{SERIES} series of `lat` (tags host, region) and one untagged series, each 1 h "
            f"at 1 sample/s; {REQUESTS} sequential requests per query on one keep-alive "
            f"connection.\n\n" + "\n".join(rows) + "\n")


def main() -> int:
    work_env = os.environ.get("BENCH_WORK")
    work = Path(tempfile.mkdtemp(dir=work_env) if work_env else tempfile.mkdtemp())
    try:
        text = run(work)
    finally:
        for p in PROCS:
            p.terminate()
        for p in PROCS:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if not work_env:
            shutil.rmtree(work, ignore_errors=True)
    print("\n## Labels\n\n" + text)
    latest = ROOT / "bench-results" / "latest"
    if latest.is_dir():
        (latest / "labels.md").write_text("## Labels\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
