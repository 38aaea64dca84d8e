"""Items per second of a critique batch on the local executor vs 1 and 2 Ray workers, same concurrency.

Scenario: N items (default 400), each its own 256x256 PNG file on disk, judged pointwise by a
scripted server in a separate process that answers after a fixed latency (default 200 ms), at
concurrency C (default 32). The ideal throughput is C / latency whatever the executor. The work
per item is the full path of `critique --input`: the driver hands the item (a path) to a judge,
which reads and downsizes the image, builds the messages, sends the request and parses the
answer. Locally that judge is a RewardModel in the driver; under Ray it is one RewardModel per
actor, fed by the driver through Ray calls.

The Ray overhead per item is measured separately from the judge: the same number of calls to an
actor method that returns at once (round trip of a small argument and result), at the same
concurrency, divided by the item count.

Noise: two cores run the driver, the Ray processes and the server; the executors run one after
the other in the same invocation (order rotated each repetition). Ray start-up (a local 2-CPU
instance, ~5-15 s) is printed apart and not counted in items/s.

    .venv/bin/python bench/bench_ray_executor.py [--items 400] [--concurrency 32] [--latency-s 0.2]
        [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_http_client import start_server
from bench_scripted_server import make_png

from rationalrewards.backends import SamplingParams
from rationalrewards.critique.model import CritiqueItem
from rationalrewards.executors import ExecutorOptions, reward_model


def options(url: str, concurrency: int) -> dict[str, Any]:
    return {"base_url": [url], "model": "scripted-judge", "concurrency": concurrency, "max_retries": 2,
            "timeout": 120, "sampling": SamplingParams(temperature=0.0, max_tokens=1024)}


def run_batch(rm: Any, items: list[CritiqueItem], concurrency: int) -> dict[str, Any]:
    # Warm-up (not timed): connections, first image decode, Ray's first calls to each actor.
    rm.critique_batch(items[:concurrency], concurrency=concurrency)
    t0 = time.perf_counter()
    results = rm.critique_batch(items, concurrency=concurrency)
    wall = time.perf_counter() - t0
    failed = [r.error for r in results if not r.ok]
    if failed:
        print(f"  {len(failed)} failed, first: {failed[0]}", file=sys.stderr)
    return {"items_per_s": round(len(items) / wall, 1), "wall_s": round(wall, 2), "failed": len(failed)}


def ray_round_trip_ms(pool: Any, n: int, concurrency: int) -> float:
    """Mean Ray cost per call: n no-op calls (a small argument and result) at this concurrency."""

    async def go() -> float:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with sem:
                await pool.call("describe")

        await asyncio.gather(*(one(i) for i in range(concurrency)))
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return (time.perf_counter() - t0) / n * 1000

    return asyncio.run(go())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--latency-s", type=float, default=0.2)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    import ray

    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    items = []
    for i in range(args.items):
        path = folder / f"img{i}.png"
        path.write_bytes(make_png(i, size=256))
        items.append(CritiqueItem(prompt=f"request {i}", image=str(path), id=str(i)))
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray local instance (2 CPUs) started in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    server, url = start_server(args.latency_s)
    ideal = args.concurrency / args.latency_s
    executors = {"local": None, "ray-1": ExecutorOptions("ray", workers=1), "ray-2": ExecutorOptions("ray", workers=2)}
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in executors}
    overhead: dict[str, list[float]] = {"ray-1": [], "ray-2": []}
    try:
        for rep in range(args.repeats):
            names = list(executors)
            names = names[rep % len(names):] + names[:rep % len(names)]
            for name in names:
                t1 = time.perf_counter()
                rm = reward_model(options(url, args.concurrency), executors[name])
                start = time.perf_counter() - t1
                res = run_batch(rm, items, args.concurrency)
                res["ratio_to_ideal"] = round(res["items_per_s"] / ideal, 3)
                res["start_s"] = round(start, 2)
                if name != "local":
                    overhead[name].append(ray_round_trip_ms(rm.pool, args.items, args.concurrency))
                rm.close()
                results[name].append(res)
                print(f"rep {rep} {name}: {json.dumps(res)}", file=sys.stderr)
    finally:
        server.kill()
        ray.shutdown()
    summary: dict[str, Any] = {"items": args.items, "concurrency": args.concurrency, "latency_s": args.latency_s,
                               "ideal_items_per_s": round(ideal, 1), "executors": {}}
    local_med = statistics.median(r["items_per_s"] for r in results["local"])
    for name, runs in results.items():
        med = statistics.median(r["items_per_s"] for r in runs)
        entry = {"items_per_s_median": med, "range": [min(r["items_per_s"] for r in runs),
                                                      max(r["items_per_s"] for r in runs)],
                 "ratio_to_ideal": round(med / ideal, 3), "ratio_to_local": round(med / local_med, 3),
                 "start_s_median": statistics.median(r["start_s"] for r in runs)}
        if name in overhead:
            entry["ray_call_ms_per_item"] = round(statistics.median(overhead[name]), 3)
        summary["executors"][name] = entry
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
