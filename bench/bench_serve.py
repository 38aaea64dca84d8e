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

``--burn`` measures instead what oversized images cost the server: ``--burn-requests``
concurrent requests of ``--burn-images`` PNGs of ``--burn-size`` pixels square (compressible,
about 2 MB each at 7990 px), reporting the answers, the server's CPU time, its resident memory
after the burst and its peak (VmHWM). ``--serve-arg`` passes options to ``serve`` (repeatable),
e.g. ``--serve-arg=--max-image-megapixels=64``.

    .venv/bin/python bench/bench_serve.py --burn [--burn-size 7990] [--burn-images 8] [--burn-requests 4]
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


def proc_rss_mb(pid: int) -> tuple[float, float]:
    """(resident now, peak resident) of a process, in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def big_png(size: int) -> bytes:
    """A ``size`` x ``size`` PNG that compresses well (smooth gradients): large when decoded, small on the wire."""
    grad = Image.linear_gradient("L").resize((size, size), Image.Resampling.BILINEAR)
    img = Image.merge("RGB", (grad, grad.transpose(Image.Transpose.ROTATE_90), grad.transpose(Image.Transpose.FLIP_TOP_BOTTOM)))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


async def run_burn(url: str, body: bytes, requests: int) -> list[tuple[int, str]]:
    async with httpx.AsyncClient(timeout=600) as http:
        answers = await asyncio.gather(*(http.post(f"{url}/v1/reward", content=body,
                                                   headers={"Content-Type": "application/json"})
                                         for _ in range(requests)))
    out = []
    for r in answers:
        payload = r.json()
        what = payload.get("kind") if r.status_code != 200 else f"{sum(x['ok'] for x in payload['results'])} ok"
        out.append((r.status_code, str(what)))
    return out


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
    ap.add_argument("--burn", action="store_true", help="measure the cost of oversized images instead")
    ap.add_argument("--burn-size", type=int, default=7990)
    ap.add_argument("--burn-images", type=int, default=8)
    ap.add_argument("--burn-requests", type=int, default=4)
    ap.add_argument("--serve-arg", action="append", default=[], help="extra option for `serve` (repeatable)")
    args = ap.parse_args()

    n_images = 0 if args.burn else args.clients * args.items * 2
    images = [noisy_png(i, args.size) for i in range(min(n_images, 256))]
    bodies = []
    for r in range(max(1, len(images) // args.items) if images else 0):
        items = [{"prompt": f"benchmark prompt {r}", "image": base64.b64encode(images[(r * args.items + k) % len(images)]).decode()}
                 for k in range(args.items)]
        bodies.append(json.dumps({"items": items, "scores_only": True}).encode())
    if args.burn:
        png = big_png(args.burn_size)
        image = base64.b64encode(png).decode()
        burn_body = json.dumps({"items": [{"prompt": "p", "image": image} for _ in range(args.burn_images)],
                                "scores_only": True}).encode()
        print(f"burn: {args.burn_requests} concurrent requests x {args.burn_images} PNGs of {args.burn_size} px "
              f"({len(png) / 1e6:.1f} MB each); serve {' '.join(args.serve_arg) or '(defaults)'}; {os.cpu_count()} CPUs")
    else:
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
                       "--log-level", "warning", *args.serve_arg],
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
        if args.burn:
            rss0, _ = proc_rss_mb(server.pid)
            cpu0_s = proc_cpu_s(server.pid)
            t0 = time.perf_counter()
            answers = asyncio.run(run_burn(url, burn_body, args.burn_requests))
            elapsed = time.perf_counter() - t0
            rss1, peak = proc_rss_mb(server.pid)
            print(f"answers: {answers}")
            print(f"wall {elapsed:.1f}s; server CPU {proc_cpu_s(server.pid) - cpu0_s:.1f}s; server RSS "
                  f"{rss0:.0f} MB before, {rss1:.0f} MB after, peak {peak:.0f} MB")
            print("server metrics: " + "; ".join(
                ln for ln in httpx.get(f"{url}/metrics").text.splitlines()
                if ln.startswith(("rationalrewards_images_decoded_total", "rationalrewards_request_failures_total"))))
            return 0
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
