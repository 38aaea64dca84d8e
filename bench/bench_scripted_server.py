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
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from PIL import Image

from rationalrewards.testing.scripted_server import ScriptedServer

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def make_png(seed: int, size: int = 512) -> bytes:
    """A 512x512 PNG of ~200-260 KB: grey noise over a colour gradient, so it barely compresses."""
    rng = random.Random(seed)
    noise = Image.effect_noise((size, size), 40 + rng.random() * 10).convert("RGB")
    gradient = Image.linear_gradient("L").resize((size, size)).convert("RGB")
    tint = Image.new("RGB", (size, size), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
    img = Image.blend(Image.blend(gradient, tint, 0.5), noise, 0.35).convert("L").convert("RGB")
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


async def run_load(base_url: str, bodies: list[bytes], n: int, concurrency: int) -> tuple[float, list[float], int]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    latencies: list[float] = []
    failures = 0
    next_index = 0
    headers = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60.0) as client:

        async def worker() -> None:
            nonlocal next_index, failures
            while next_index < n:
                i = next_index
                next_index += 1
                t0 = time.perf_counter()
                try:
                    r = await client.post("/chat/completions", content=bodies[i % len(bodies)], headers=headers)
                    r.raise_for_status()
                    r.json()["choices"][0]["message"]["content"]
                except Exception:
                    failures += 1
                latencies.append(time.perf_counter() - t0)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return elapsed, latencies, failures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency-s", type=float, default=0.2)
    ap.add_argument("--pool", type=int, default=32, help="distinct pre-encoded bodies, used round-robin")
    ap.add_argument("--in-thread", action="store_true", help="run the server in this process")
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
        elapsed, latencies, failures = asyncio.run(
            run_load(base_url, bodies, args.requests, args.concurrency)
        )
        cpu1, client_cpu1 = server_cpu(), time.process_time()
    finally:
        if server is not None:
            server.stop()
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)

    rps = args.requests / elapsed
    ideal = args.concurrency / args.latency_s
    lat = sorted(latencies)
    mb = sum(sizes) / len(sizes) * args.requests / 1e6
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
