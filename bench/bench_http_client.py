"""Throughput of the OpenAI-compatible client (our ``OpenAIBackend``) against a slow server,
side by side with the plain reference client (``reference_aiohttp_client.py``).

Scenario: N requests (default 2,000) at concurrency C (default: 64, then 128), each carrying its
own 512x512 image, against a local scripted server that answers every request after a fixed
200 ms. The ideal throughput is C / 0.2 s. Both clients run the same full path: image intake
(``load_image`` on PNG bytes, one distinct object per request so no data URL is reused), the
released message layout, base64 data URL, JSON body, HTTP, response parsing, critique parsing.

Noise: the server is a separate process on the same machine, so its CPU (printed per request)
competes with the client's; on a small shared machine other jobs do too. The clients therefore
run alternately in the same invocation (order swapped every repetition), and the summary gives
medians with min-max ranges and the median of the per-repetition ratios ours / reference.

    .venv/bin/python bench/bench_http_client.py [--requests 2000] [--concurrency 64 128]
        [--repeats 3] [--clients ours reference] [--format png|jpeg]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_scripted_server import make_png, proc_cpu_s
from reference_aiohttp_client import PlainAiohttpBackend

from rationalrewards.backends import Backend, SamplingParams
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.critique.parser import parse_critique
from rationalrewards.critique.prompts import build_messages
from rationalrewards.images import load_image

MODEL = "scripted-judge"

CLIENTS: dict[str, Callable[[str, int], Backend]] = {
    "ours": lambda url, c: OpenAIBackend(url, MODEL, concurrency=c, timeout=60, max_retries=2),
    "reference": lambda url, c: PlainAiohttpBackend(url, MODEL, concurrency=c, timeout=60),
}


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "rationalrewards.testing.scripted_server", "--latency-s", str(latency), "--no-record"],
        stdout=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline().strip()  # type: ignore[union-attr]
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


async def run(backend: Backend, n: int, concurrency: int, latency: float, pngs: list[bytes],
              server_cpu: Callable[[], float]) -> dict[str, Any]:
    params = SamplingParams(temperature=0.0, max_tokens=1024)
    latencies: list[float] = []
    failures: list[str] = []
    parsed_ok = 0
    intake = asyncio.Semaphore(concurrency * 2)  # keep image intake just ahead of the network

    async def one(i: int) -> None:
        nonlocal parsed_ok
        async with intake:
            img = load_image(pngs[i % len(pngs)])
            msgs = build_messages("t2i", "pointwise", f"request {i}", [img])
            t0 = time.perf_counter()
            gen = await backend.agenerate(msgs, params)
            latencies.append(time.perf_counter() - t0)
            if not gen.ok:
                failures.append(gen.error or "?")
            elif parse_critique(gen.text, "t2i").ok:
                parsed_ok += 1

    # Warm-up (not timed): a pooling client opens its connections here.
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    latencies.clear()
    failures.clear()
    parsed_ok = 0
    cpu0, server0, t0 = cpu_seconds(), server_cpu(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu, server = time.perf_counter() - t0, cpu_seconds() - cpu0, server_cpu() - server0
    await backend.aclose()
    latencies.sort()
    if failures:
        print(f"  first failure: {failures[0]}", file=sys.stderr)
    return {
        "throughput_rps": round(n / wall, 1),
        "ratio_to_ideal": round((n / wall) / (concurrency / latency), 3),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p95_ms": round(1000 * latencies[int(0.95 * len(latencies)) - 1], 1),
        "client_cpu_ms_per_request": round(1000 * cpu / n, 3),
        "server_cpu_ms_per_request": round(1000 * server / n, 3),
        "failures": len(failures),
        "parsed_ok": parsed_ok,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def summarise(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--clients", nargs="+", choices=sorted(CLIENTS), default=["ours", "reference"])
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--distinct-images", type=int, default=32)
    ap.add_argument("--format", choices=["png", "jpeg"], default="png",
                    help="png: ~250 KB lossless noisy gradient; jpeg: the same pictures at quality 90")
    args = ap.parse_args()
    pngs = [make_png(i) for i in range(args.distinct_images)]
    if args.format == "jpeg":
        import io

        from PIL import Image

        def to_jpeg(data: bytes) -> bytes:
            buf = io.BytesIO()
            Image.open(io.BytesIO(data)).save(buf, format="JPEG", quality=90)
            return buf.getvalue()

        pngs = [to_jpeg(p) for p in pngs]
    proc, url = start_server(args.latency)
    rows: list[dict[str, Any]] = []
    try:
        for concurrency in args.concurrency:
            for rep in range(args.repeats):
                # Alternate the order so neither client always runs first (warmer caches,
                # different background load).
                order = args.clients if rep % 2 == 0 else list(reversed(args.clients))
                for name in order:
                    backend = CLIENTS[name](url, concurrency)
                    res = asyncio.run(run(backend, args.requests, concurrency, args.latency, pngs,
                                          lambda: proc_cpu_s(proc.pid)))
                    row = {"client": name, "concurrency": concurrency, "repeat": rep, **res}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    print(f"\n{args.requests} requests per run, {args.format} ~{sum(map(len, pngs)) // len(pngs) // 1000} KB, "
          f"server latency {args.latency * 1000:.0f} ms, server in its own process on the same machine, "
          f"{os.cpu_count()} CPUs; median [min-max] over {args.repeats} repetitions")
    summary: dict[str, Any] = {"bench": "http_client", "requests": args.requests, "format": args.format}
    for concurrency in args.concurrency:
        for name in args.clients:
            sel = [r for r in rows if r["client"] == name and r["concurrency"] == concurrency]
            print(f"C={concurrency:<4} {name:<10} ratio_to_ideal {summarise([r['ratio_to_ideal'] for r in sel])}  "
                  f"client CPU ms/req {summarise([r['client_cpu_ms_per_request'] for r in sel])}  "
                  f"server CPU ms/req {summarise([r['server_cpu_ms_per_request'] for r in sel])}  "
                  f"p50 ms {statistics.median(r['latency_p50_ms'] for r in sel):.0f}  "
                  f"failures {sum(r['failures'] for r in sel)}")
            summary[f"c{concurrency}_{name}_ratio_to_ideal"] = statistics.median(r["ratio_to_ideal"] for r in sel)
            summary[f"c{concurrency}_{name}_cpu_ms"] = statistics.median(r["client_cpu_ms_per_request"] for r in sel)
        if {"ours", "reference"} <= set(args.clients):
            paired = []
            for rep in range(args.repeats):
                by = {r["client"]: r for r in rows if r["concurrency"] == concurrency and r["repeat"] == rep}
                paired.append(by["ours"]["throughput_rps"] / by["reference"]["throughput_rps"])
            print(f"C={concurrency:<4} ours / reference throughput {summarise(paired)}")
            summary[f"c{concurrency}_ours_over_reference"] = round(statistics.median(paired), 3)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
