"""Throughput of the OpenAI-compatible client (our ``OpenAIBackend``) against a slow server.

Scenario: N requests (default 4,000) at concurrency C (default 128), each carrying its own
512x512 image, against a local server that answers every request after a fixed 200 ms. The
ideal throughput is C / 0.2 s. Printed: achieved throughput, ratio to ideal, latency p50/p95,
client CPU milliseconds per request (this process only; the server runs in its own process).

The client does all the real per-request work: image intake (``load_image`` on PNG bytes, one
distinct object per request so no data URL is reused), base64 data URL, JSON body, HTTP,
response parsing, critique parsing. Run:

    .venv/bin/python bench/bench_http_client.py [--requests 4000] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_scripted_server import make_png

from rationalrewards.backends import SamplingParams
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.critique.parser import parse_critique
from rationalrewards.critique.prompts import build_messages
from rationalrewards.images import load_image


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


async def run(n: int, concurrency: int, base_url: str, pngs: list[bytes]) -> dict:
    backend = OpenAIBackend(base_url, "scripted-judge", concurrency=concurrency, timeout=60, max_retries=2)
    params = SamplingParams(temperature=0.0, max_tokens=1024)
    latencies: list[float] = []
    failures = 0
    parsed_ok = 0
    sem = asyncio.Semaphore(concurrency * 2)  # keep image intake just ahead of the network

    async def one(i: int) -> None:
        nonlocal failures, parsed_ok
        async with sem:
            img = load_image(pngs[i % len(pngs)])
            msgs = build_messages("t2i", "pointwise", f"request {i}", [img])
            t0 = time.perf_counter()
            gen = await backend.agenerate(msgs, params)
            latencies.append(time.perf_counter() - t0)
            if not gen.ok:
                failures += 1
            elif parse_critique(gen.text, "t2i").ok:
                parsed_ok += 1

    # Warm-up: open the connections before timing.
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    latencies.clear()
    parsed_ok = 0
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
    await backend.aclose()
    latencies.sort()
    return {
        "requests": n,
        "concurrency": concurrency,
        "wall_s": round(wall, 3),
        "throughput_rps": round(n / wall, 1),
        "ideal_rps": round(concurrency / 0.2, 1),
        "ratio_to_ideal": round((n / wall) / (concurrency / 0.2), 3),
        "latency_p50_ms": round(1000 * statistics.median(latencies), 1),
        "latency_p95_ms": round(1000 * latencies[int(0.95 * len(latencies)) - 1], 1),
        "client_cpu_ms_per_request": round(1000 * cpu / n, 3),
        "failures": failures,
        "parsed_ok": parsed_ok,
        "clients_created": backend.clients_created,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--distinct-images", type=int, default=32)
    ap.add_argument("--format", choices=["png", "jpeg"], default="png",
                    help="png: ~250 KB lossless noisy gradient; jpeg: the same pictures at quality 90 (~40 KB)")
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
    try:
        result = asyncio.run(run(args.requests, args.concurrency, url, pngs))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    result["image_format"] = args.format
    result["image_bytes_avg"] = sum(map(len, pngs)) // len(pngs)
    for k, v in result.items():
        print(f"{k:>28}: {v}")
    print(json.dumps({"bench": "http_client", **result}))


if __name__ == "__main__":
    main()
