"""Benchmarks of the Generate-Critique-Refine loop (offline: toy generator, scripted critic).

1. Loop overhead: wall time per candidate when generation and critique cost ~nothing (saving
   images, HTTP to the local critic, parsing, trajectory writes, the HTML report).
2. Overlap in batches: a generator that takes 40 ms per image (one at a time, like one GPU) and a
   critic that takes 60 ms per request. With several items in flight the critic's latency hides
   behind generation for other items; the lower bound on wall time is the pure generation time,
   so "generator busy" (generation time / wall time) is the number to watch.

Run: python bench/bench_refine_loop.py  (about 20 s)
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.refine import CallableGenerator, RefineConfig, RefineLoop, arefine_batch
from rationalrewards.refine.toy import toy_generator
from rationalrewards.testing.judges import toy_critic
from rationalrewards.testing.scripted_server import ScriptedServer

GEN_S = 0.04
CRITIC_S = 0.06


def slow_generator(request: str, *, seed: int, source=None):
    time.sleep(GEN_S)  # a blocking call, like a pipeline on one GPU
    return toy_generator(request, seed=seed)


async def overhead(server: ScriptedServer, root: Path) -> float:
    critic = RewardModel(OpenAIBackend(server.base_url, "critic"))
    loop = RefineLoop(CallableGenerator(toy_generator), critic,
                      RefineConfig(rounds=4, candidates=4, threshold=None, patience=None))
    n = 0
    t0 = time.perf_counter()
    for i in range(5):
        traj = await loop.arun(f"a grey square {i}", root / f"o{i}")
        n += traj.usage.generator_calls
    dt = time.perf_counter() - t0
    await critic.aclose()
    return dt / n


async def batch_time(server: ScriptedServer, root: Path, prompts: Path, concurrency: int) -> float:
    critic = RewardModel(OpenAIBackend(server.base_url, "critic"))
    t0 = time.perf_counter()
    await arefine_batch(prompts, root / f"b{concurrency}", generator=CallableGenerator(slow_generator), critic=critic,
                        config=RefineConfig(rounds=2, candidates=2, threshold=None, patience=None, baseline=False),
                        concurrency=concurrency)
    dt = time.perf_counter() - t0
    await critic.aclose()
    return dt


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with ScriptedServer(toy_critic()) as server:
            per_cand = await overhead(server, root)
        print(f"loop overhead: {per_cand * 1000:.1f} ms per candidate (generate+critique+save, toy generator, "
              "scripted critic with no latency)")
        prompts = root / "prompts.txt"
        prompts.write_text("".join(f"a grey shape {i}\n" for i in range(8)))
        with ScriptedServer(toy_critic(), latency_s=CRITIC_S) as server:
            serial = await batch_time(server, root, prompts, 1)
            overlapped = await batch_time(server, root, prompts, 4)
        work = 8 * 3 * 2 * GEN_S
        print(f"batch of 8 items x 3 rounds x 2 candidates, generator {GEN_S * 1000:.0f} ms/image (serialised), "
              f"critic {CRITIC_S * 1000:.0f} ms/request:")
        print(f"  concurrency 1: {serial:.2f} s (generator busy {work / serial:.0%})   concurrency 4: {overlapped:.2f} s "
              f"(generator busy {work / overlapped:.0%})   speed-up {serial / overlapped:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
