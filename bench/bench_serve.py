"""Reward-server throughput and latency under concurrent RL clients, against a scripted judge.

Three processes, as in production: the scripted judge (``latency_s`` per critique, answering
the released format), ``rationalrewards serve`` pointed at it, and this script running
``--clients`` concurrent clients. Each client sends ``--requests`` POST /v1/reward requests of
``--items`` images (distinct noisy PNGs, base64) back to back, like RL workers scoring their
batches.

If the server passed every item of every request to the judge at once and cost nothing
itself, each request would take exactly ``latency_s`` and the throughput would be
``clients * items / latency_s``: the script prints the measured numbers and their ratio to
that ideal, plus the same load sent straight to a ``RewardModel`` in this process (no HTTP
hop) to separate the server's overhead from the client's.

    .venv/bin/python bench/bench_serve.py [--clients 32] [--items 4] [--requests 8] [--latency-s 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def noisy_png(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    img = Image.effect_noise((size, size), 20 + rng.random() * 20).convert("RGB")
    tint = Image.new("RGB", (size, size), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    buf = io.BytesIO()
    Image.blend(img, tint, 0.5).save(buf, format="PNG")
    return buf.getvalue()


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def start(cmd: list[str], ready: str | None = None, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    line = ""
    if ready is not None:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith(ready):
            raise RuntimeError(f"{cmd[2:4]} did not start: {line}")
    return proc, line


async def run_clients(url: str, bodies: list[bytes], clients: int, requests: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    failures = 0

    async def client(c: int) -> None:
        nonlocal failures
        async with httpx.AsyncClient(timeout=300) as http:
            for r in range(requests):
                body = bodies[(c * requests + r) % len(bodies)]
                t0 = time.perf_counter()
                resp = await http.post(f"{url}/v1/reward", content=body, headers={"Content-Type": "application/json"})
                latencies.append(time.perf_counter() - t0)
                if resp.status_code != 200 or not all(x["ok"] for x in resp.json()["results"]):
                    failures += 1

    start_t = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return time.perf_counter() - start_t, latencies, failures


async def run_direct(judge_url: str, images: list[bytes], clients: int, requests: int, items: int
                     ) -> tuple[float, list[float], int]:
    from rationalrewards import RewardModel

    rm = RewardModel.from_openai(judge_url, model="scripted-judge", backend_kwargs={"concurrency": 4096})
    latencies: list[float] = []
    failures = 0

    async def client(c: int) -> None:
        nonlocal failures
        for r in range(requests):
            base = (c * requests + r) * items
            t0 = time.perf_counter()
            res = await asyncio.gather(*(rm.acritique("a benchmark prompt", images[(base + k) % len(images)])
                                         for k in range(items)))
            latencies.append(time.perf_counter() - t0)
            failures += sum(not x.ok for x in res)

    start_t = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    elapsed = time.perf_counter() - start_t
    await rm.aclose()
    return elapsed, latencies, failures


def report(name: str, elapsed: float, latencies: list[float], failures: int, n_items: int, ideal_tput: float,
           latency_s: float, cpu: str = "") -> None:
    tput = n_items / elapsed
    print(f"{name:<22} {tput:8.1f} items/s  ({tput / ideal_tput:5.1%} of ideal {ideal_tput:.0f})   "
          f"request p50 {statistics.median(latencies):.3f}s p95 {pct(latencies, 0.95):.3f}s "
          f"(ideal {latency_s:.3f}s; p50/ideal {statistics.median(latencies) / latency_s:.2f}x)   "
          f"failed {failures}{cpu}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--items", type=int, default=4, help="images per request")
    ap.add_argument("--requests", type=int, default=8, help="requests per client")
    ap.add_argument("--latency-s", type=float, default=0.5, help="scripted judge latency per critique")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels")
    ap.add_argument("--skip-direct", action="store_true")
    args = ap.parse_args()

    n_images = args.clients * args.items * 2
    images = [noisy_png(i, args.size) for i in range(min(n_images, 256))]
    bodies = []
    for r in range(max(1, len(images) // args.items)):
        items = [{"prompt": f"benchmark prompt {r}", "image": base64.b64encode(images[(r * args.items + k) % len(images)]).decode()}
                 for k in range(args.items)]
        bodies.append(json.dumps({"items": items, "scores_only": True}).encode())
    print(f"{args.clients} clients x {args.requests} requests x {args.items} images of {args.size}px "
          f"(~{statistics.mean(len(b) for b in bodies) / 1e3:.0f} KB per request); judge latency {args.latency_s}s; "
          f"{os.cpu_count()} CPUs")

    py = sys.executable
    judge, line = start([py, "-m", "rationalrewards.testing.scripted_server", "--latency-s", str(args.latency_s),
                         "--no-record"], ready="READY")
    judge_url = line.split()[1]
    port = free_port()
    server, _ = start([py, "-c", "from rationalrewards.cli.main import main; main()", "serve", "--base-url", judge_url,
                       "--model", "scripted-judge", "--port", str(port), "--concurrency", "4096",
                       "--log-level", "warning"],
                      env={**os.environ, "RATIONALREWARDS_TOKEN": ""})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("reward server did not start: " + (server.stdout.read() if server.stdout else ""))
            time.sleep(0.2)
        n_items = args.clients * args.requests * args.items
        ideal = args.clients * args.items / args.latency_s
        asyncio.run(run_clients(url, bodies[:1], 1, 1))  # warm-up: connections, first imports
        cpu0 = proc_cpu_s(server.pid), proc_cpu_s(judge.pid), time.process_time()
        elapsed, lat, failed = asyncio.run(run_clients(url, bodies, args.clients, args.requests))
        cpu1 = proc_cpu_s(server.pid), proc_cpu_s(judge.pid), time.process_time()
        cpu = (f"\n{'':<22} CPU: server {cpu1[0] - cpu0[0]:.1f}s ({(cpu1[0] - cpu0[0]) / elapsed:.0%} of a core), "
               f"judge {cpu1[1] - cpu0[1]:.1f}s, clients {cpu1[2] - cpu0[2]:.1f}s; "
               f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print()
        report("via reward server", elapsed, lat, failed, n_items, ideal, args.latency_s, cpu)
        stats = httpx.get(f"{url}/metrics").text
        served = [ln for ln in stats.splitlines() if ln.startswith("rationalrewards_items_total")]
        print(f"{'':<22} server metrics: {served[0] if served else 'n/a'}")
        if not args.skip_direct:
            elapsed, lat, failed = asyncio.run(run_direct(judge_url, images, args.clients, args.requests, args.items))
            report("direct RewardModel", elapsed, lat, failed, n_items, ideal, args.latency_s)
    finally:
        for proc in (server, judge):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
