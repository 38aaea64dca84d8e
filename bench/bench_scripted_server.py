"""Self-check: can the scripted server carry the throughput benchmark's load?

Scenario (the brief's target): 4,000 chat requests at concurrency 128, each carrying a base64
512x512 PNG (~200-400 KB JSON body), against a server that answers after ``latency_s=0.2``.
The ideal throughput is 128 / 0.2 = 640 requests/s; the script prints what was achieved, the
ratio to ideal, latency percentiles, and the CPU time spent by the server and by the client.

By default the server runs in its own process (``python -m
rationalrewards.testing.scripted_server``) so its CPU can be read from ``/proc`` and it does not
fight the client for one GIL; ``--in-thread`` runs it in this process instead, the way test
suites use it.

    .venv/bin/python bench/bench_scripted_server.py [--requests 4000] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import importlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from rationalrewards.testing.scripted_server import ScriptedServer

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def make_png(seed: int, size: int = 512) -> bytes:
    """A 512x512 RGB PNG of ~210-250 KB (~290-340 KB as base64): a tinted gradient with noise,
    so it compresses like a photo rather than like a flat test pattern."""
    rng = random.Random(seed)
    noise = Image.effect_noise((size, size), 4 + rng.random() * 4).convert("RGB")
    gradient = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    tint = Image.new("RGB", (size, size), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    img = Image.blend(Image.blend(gradient, tint, 0.5), noise, 0.2)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def build_bodies(pool: int) -> list[bytes]:
    """Distinct request bodies, JSON-encoded once so the timed loop does no encoding."""
    bodies = []
    for i in range(pool):
        url = "data:image/png;base64," + base64.b64encode(make_png(i)).decode()
        payload = {
            "model": "scripted-judge",
            "temperature": 0.0,
            "max_tokens": 1024,
            "messages": [
                {"role": "system", "content": "You are an expert evaluator of generated images."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"User Instruction: benchmark item {i}\n"
                                                 "You are provided with one image:\n1. Generated Image "},
                        {"type": "image_url", "image_url": {"url": url}},
                        {"type": "text", "text": "\nJudge the image on each dimension."},
                    ],
                },
            ],
        }
        bodies.append(json.dumps(payload).encode())
    return bodies


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class _Counter:
    """Hands out request indices to the workers (single event loop: no lock needed)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.next = 0
        self.failures = 0
        self.latencies: list[float] = []

    def fail(self, exc: Exception) -> None:
        if self.failures == 0:
            print(f"first failure: {type(exc).__name__}: {exc}", file=sys.stderr)
        self.failures += 1

    def take(self) -> int | None:
        if self.next >= self.n:
            return None
        self.next += 1
        return self.next - 1


async def run_httpx(
    base_url: str, bodies: list[bytes], n: int, concurrency: int, clients: int, lib: Any = httpx
) -> tuple[float, _Counter]:
    """The brief's client: httpx.AsyncClient, ``concurrency`` connections split over ``clients`` pools.

    ``lib`` may be another module with httpx's API (``httpx2``, whose pool does not rescan every
    connection per queued request) to tell server limits from client-pool limits.
    """
    per_client = max(1, concurrency // clients)
    limits = lib.Limits(max_connections=per_client, max_keepalive_connections=per_client)
    headers = {"Content-Type": "application/json"}
    counter = _Counter(n)
    pools = [lib.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) for _ in range(clients)]

    async def worker(client: Any) -> None:
        while (i := counter.take()) is not None:
            t0 = time.perf_counter()
            try:
                r = await client.post("/chat/completions", content=bodies[i % len(bodies)], headers=headers)
                r.raise_for_status()
                r.json()["choices"][0]["message"]["content"]
            except Exception as exc:
                counter.fail(exc)
            counter.latencies.append(time.perf_counter() - t0)

    try:
        start = time.perf_counter()
        await asyncio.gather(*(worker(pools[w % clients]) for w in range(per_client * clients)))
        elapsed = time.perf_counter() - start
    finally:
        for client in pools:
            await client.aclose()
    return elapsed, counter


async def run_raw(base_url: str, bodies: list[bytes], n: int, concurrency: int) -> tuple[float, _Counter]:
    """A minimal keep-alive HTTP/1.1 client on asyncio streams: isolates the server's capacity
    from the HTTP client library's own CPU cost."""
    url = httpx.URL(base_url)
    path = url.raw_path.decode().rstrip("/") + "/chat/completions"
    heads = [
        (f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nContent-Type: application/json\r\n"
         f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        for body in bodies
    ]
    counter = _Counter(n)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(url.host, url.port, limit=1 << 20)
        try:
            while (i := counter.take()) is not None:
                t0 = time.perf_counter()
                try:
                    writer.write(heads[i % len(heads)])
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head.split(b" ", 2)[1])
                    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:"))
                    payload = json.loads(await reader.readexactly(length))
                    if status != 200:
                        raise RuntimeError(status)
                    payload["choices"][0]["message"]["content"]
                except Exception as exc:
                    counter.fail(exc)
                    break  # the connection's framing is unknown now: do not reuse it
                counter.latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, counter


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency-s", type=float, default=0.2)
    ap.add_argument("--pool", type=int, default=32, help="distinct pre-encoded bodies, used round-robin")
    ap.add_argument("--in-thread", action="store_true", help="run the server in this process")
    ap.add_argument("--client", choices=("httpx", "httpx2", "raw"), default="httpx",
                    help="httpx.AsyncClient (the brief's scenario), httpx2.AsyncClient if installed, "
                         "or a minimal asyncio-streams client")
    ap.add_argument("--clients", type=int, default=1,
                    help="httpx only: split the connections over this many AsyncClient pools")
    args = ap.parse_args()

    t0 = time.perf_counter()
    bodies = build_bodies(args.pool)
    sizes = [len(b) for b in bodies]
    print(f"built {len(bodies)} bodies in {time.perf_counter() - t0:.1f}s: "
          f"{min(sizes) / 1e3:.0f}-{max(sizes) / 1e3:.0f} KB (mean {statistics.mean(sizes) / 1e3:.0f} KB)")

    proc: subprocess.Popen[str] | None = None
    server: ScriptedServer | None = None
    if args.in_thread:
        server = ScriptedServer(latency_s=args.latency_s, record=False).start()
        base_url = server.base_url
        server_cpu = time.process_time  # whole process: server + client together
    else:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rationalrewards.testing.scripted_server",
             "--latency-s", str(args.latency_s), "--no-record"],
            stdout=subprocess.PIPE, text=True,
        )
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("READY "):
            proc.kill()
            raise SystemExit(f"server did not start: {line!r}")
        base_url = line.split(" ", 1)[1]
        pid = proc.pid

        def server_cpu() -> float:
            return proc_cpu_s(pid)

    try:
        cpu0, client_cpu0 = server_cpu(), time.process_time()
        if args.client == "raw":
            coro = run_raw(base_url, bodies, args.requests, args.concurrency)
        else:
            lib = importlib.import_module(args.client)
            coro = run_httpx(base_url, bodies, args.requests, args.concurrency, args.clients, lib)
        elapsed, counter = asyncio.run(coro)
        latencies, failures = counter.latencies, counter.failures
        cpu1, client_cpu1 = server_cpu(), time.process_time()
    finally:
        if server is not None:
            server.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)

    rps = args.requests / elapsed
    # Other work on this machine skews every number below: print it alongside.
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    ideal = args.concurrency / args.latency_s
    lat = sorted(latencies)
    mb = sum(sizes) / len(sizes) * args.requests / 1e6
    print(f"client={args.client} clients={args.clients if args.client != 'raw' else '-'} "
          f"server={'in-thread' if args.in_thread else 'subprocess'} cpus={os.cpu_count()} loadavg_1m={load:.2f}")
    print(f"requests={args.requests} concurrency={args.concurrency} latency_s={args.latency_s} "
          f"failures={failures} body_MB_total={mb:.0f}")
    print(f"elapsed={elapsed:.2f}s throughput={rps:.0f} req/s ideal={ideal:.0f} req/s ratio={rps / ideal:.3f}")
    print(f"latency p50={lat[len(lat) // 2] * 1e3:.0f}ms p90={lat[int(len(lat) * 0.9)] * 1e3:.0f}ms "
          f"p99={lat[int(len(lat) * 0.99)] * 1e3:.0f}ms max={lat[-1] * 1e3:.0f}ms")
    if args.in_thread:
        print(f"process CPU (server+client, one GIL)={cpu1 - cpu0:.2f}s "
              f"({(cpu1 - cpu0) / elapsed:.0%} of one core)")
    else:
        server_s = cpu1 - cpu0
        print(f"server CPU={server_s:.2f}s ({server_s / elapsed:.0%} of one core, "
              f"{server_s / args.requests * 1e3:.2f} ms/request); "
              f"client CPU={client_cpu1 - client_cpu0:.2f}s ({(client_cpu1 - client_cpu0) / elapsed:.0%} of one core)")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
