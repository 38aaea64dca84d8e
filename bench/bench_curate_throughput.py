"""What does curation cost on top of the critiques themselves?

Scenario: N items (small PNGs of varied colours) critiqued by a scripted judge that answers after
``--latency`` seconds, at ``--concurrency`` requests in flight. Measured in one run:

1. ``RewardModel.critique_batch`` over the items (the baseline: only the judge calls);
2. ``curate`` on a fresh folder (the same calls + the resumable store, the split, plots, report);
3. ``curate`` again with other thresholds (a re-split from cached critiques, no judge at all);
4. ``curate`` again with the judge (everything cached: the cost of checking the cache).

Prints wall times, items/s, and the ratio of (2) to (1): the curation overhead.

    .venv/bin/python bench/bench_curate_throughput.py [--items 400] [--latency 0.05] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from PIL import Image

from rationalrewards import RewardModel
from rationalrewards.backends.openai_http import OpenAIBackend
from rationalrewards.curate import Thresholds, curate
from rationalrewards.testing.scripted_server import ScriptedServer, critique_text, detect_task


def judge(req):
    # Scores vary with the request so the distributions and the split are not degenerate.
    rnd = random.Random(len(req.body))
    return critique_text(detect_task(req), {"text_faithfulness": round(1 + 3 * rnd.random(), 1),
                                            "physical_quality": round(1 + 3 * rnd.random(), 1),
                                            "text_rendering": None})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        rng = random.Random(0)
        rows = []
        for i in range(args.items):
            path = root / "img" / f"{i:05d}.png"
            path.parent.mkdir(exist_ok=True)
            Image.new("RGB", (64, 64), (rng.randrange(256), rng.randrange(256), rng.randrange(256))).save(path)
            rows.append({"id": f"item-{i}", "prompt": f"a coloured square number {i}", "image": f"img/{i:05d}.png"})
        items = root / "items.jsonl"
        items.write_text("".join(json.dumps(r) + "\n" for r in rows))
        abs_rows = [{**r, "image": str(root / r["image"])} for r in rows]

        with ScriptedServer(judge, latency_s=args.latency) as server:
            def model() -> RewardModel:
                return RewardModel(OpenAIBackend(server.base_url, "judge", concurrency=args.concurrency))

            rm = model()
            t = time.perf_counter()
            results = rm.critique_batch(abs_rows, concurrency=args.concurrency)
            base_s = time.perf_counter() - t
            rm.close()
            assert all(r.ok for r in results)

            t = time.perf_counter()
            first = curate(items, root / "out", reward_model=model(), concurrency=args.concurrency,
                           thresholds=Thresholds(min_reward=0.5))
            curate_s = time.perf_counter() - t

            t = time.perf_counter()
            curate(items, root / "out", thresholds=Thresholds(min_scores={"physical_quality": 3.0}))
            resplit_s = time.perf_counter() - t

            t = time.perf_counter()
            cached = curate(items, root / "out", reward_model=model(), concurrency=args.concurrency)
            cached_s = time.perf_counter() - t

    n = args.items
    ideal = n * args.latency / args.concurrency
    print(f"items={n} latency={args.latency}s concurrency={args.concurrency} (ideal judge time {ideal:.2f}s)")
    print(f"critique_batch only      {base_s:7.2f}s  {n / base_s:8.1f} items/s")
    print(f"curate (fresh)           {curate_s:7.2f}s  {n / curate_s:8.1f} items/s  "
          f"kept {first.n_kept}/{first.n}")
    print(f"curate / critique_batch  {curate_s / base_s:7.2f}x")
    print(f"re-split, no judge       {resplit_s:7.2f}s  {1000 * resplit_s / n:8.2f} ms/item")
    print(f"rerun, all cached        {cached_s:7.2f}s  {1000 * cached_s / n:8.2f} ms/item  "
          f"(judge calls: {cached.n_critiqued})")


if __name__ == "__main__":
    main()
