"""PARROT pipeline throughput against a scripted teacher with a fixed latency.

The teacher (the ``parrot-teacher`` scripted judge) runs in its own process and answers every
request after ``--latency`` seconds, so the ideal wall time of a phase is
``calls * latency / concurrency``. The script runs the whole pipeline (ingest, anchor, filter,
build-sft) twice on the same pairs:

1. with the latency (default 0.2 s) at high concurrency: pairs/s and the ratio to the ideal;
2. with zero latency: the cost per pair of everything but the teacher's thinking (HTTP client,
   local server, image storage, prompt building, parsing, checks, row logging, exports);
3. with the same scripted teacher called in process (no HTTP, no base64): the pipeline's own
   overhead per pair beyond the teacher calls.

    .venv/bin/python bench/bench_parrot_pipeline.py [--pairs 200] [--concurrency 128] [--latency 0.2]

Every pair is distinct (its own 256x256 noisy images, ~100 KB PNGs) and behaves as "ok", so each pair
costs 2 pairwise + 4 pointwise anchored calls and 2 re-predictions (8 teacher calls).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def make_pairs(root: Path, n: int) -> Path:
    rng = random.Random(0)
    (root / "img").mkdir(parents=True)
    rows = []
    for i in range(n):
        names = []
        for side in "ab":
            noise = Image.effect_noise((256, 256), 20 + rng.random() * 40).convert("RGB")
            tint = Image.new("RGB", (256, 256), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
            name = f"img/{i}{side}.png"
            Image.blend(noise, tint, 0.5).save(root / name)
            names.append(name)
        rows.append({"id": f"p{i}", "prompt": f"a scene number {i} with a red kite", "image_a": names[0],
                     "image_b": names[1], "label": "A" if i % 2 else "B"})
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_once(pairs: Path, out: Path, latency: float, concurrency: int) -> dict:
    from rationalrewards.parrot.config import resolve_config
    from rationalrewards.parrot.pipeline import Parrot

    proc = subprocess.Popen([sys.executable, "-m", "rationalrewards.testing.judges", "--judge", "parrot-teacher",
                             "--latency-s", str(latency), "--no-record"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().split()  # type: ignore[union-attr]
        assert line and line[0] == "READY", line
        cfg = resolve_config(overrides={
            "pairs": str(pairs), "out": str(out),
            "teacher": {"base_url": [line[1]], "model": "teacher", "concurrency": concurrency, "max_retries": 0},
        })
        t0 = time.perf_counter()
        stats = Parrot(cfg).run()
        wall = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)
    calls = stats["anchor"]["calls"] + stats["filter"]["repredict_calls"]
    return {"wall": wall, "stats": stats, "calls": calls, "timing": stats["last_run"]["timing_s"]}


class InProcessTeacher:
    """The scripted teacher as a Backend, without HTTP (images replaced by empty data URLs)."""

    name = "in-process"
    model_name = "teacher"

    def __init__(self) -> None:
        from rationalrewards.testing.judges import scripted_teacher

        self.respond = scripted_teacher()
        self.calls = 0

    async def agenerate(self, messages, params):
        from rationalrewards.backends import Generation
        from rationalrewards.testing.scripted_server import RecordedRequest

        body = {"messages": [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else [
            {"type": "text", "text": p["text"]} if p["type"] == "text" else {"type": "image_url",
                                                                              "image_url": {"url": "data:,"}}
            for p in m["content"]]} for m in messages], "seed": params.seed}
        self.calls += 1
        text = self.respond(RecordedRequest("POST", "/v1/chat/completions", {}, b"", body, 0.0, 1))
        return Generation(text=text, finish_reason="stop", prompt_tokens=1000, completion_tokens=300)

    async def aclose(self) -> None:
        pass


def run_in_process(pairs: Path, out: Path) -> dict:
    from rationalrewards.parrot.config import resolve_config
    from rationalrewards.parrot.pipeline import Parrot

    cfg = resolve_config(overrides={"pairs": str(pairs), "out": str(out)})
    teacher = InProcessTeacher()
    t0 = time.perf_counter()
    stats = Parrot(cfg, backend=teacher).run()  # type: ignore[arg-type]
    return {"wall": time.perf_counter() - t0, "calls": teacher.calls, "timing": stats["last_run"]["timing_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=128)
    ap.add_argument("--latency", type=float, default=0.2)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_parrot_"))
    try:
        pairs = make_pairs(root / "data", args.pairs)
        slow = run_once(pairs, root / "slow", args.latency, args.concurrency)
        fast = run_once(pairs, root / "fast", 0.0, args.concurrency)
        local = run_in_process(pairs, root / "local")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    n = args.pairs
    t = slow["timing"]
    anchor_calls = slow["stats"]["anchor"]["calls"]
    rp_calls = slow["stats"]["filter"]["repredict_calls"]
    ideal_anchor = anchor_calls * args.latency / args.concurrency
    ideal_filter = rp_calls * args.latency / args.concurrency
    ideal = ideal_anchor + ideal_filter
    print(f"pairs: {n}, teacher calls: {slow['calls']} ({anchor_calls} anchored + {rp_calls} re-predictions), "
          f"kept: {slow['stats']['filter']['kept']}")
    print(f"\n[latency {args.latency:g}s, concurrency {args.concurrency}]")
    print(f"  wall {slow['wall']:.2f}s  ->  {n / slow['wall']:.1f} pairs/s, {slow['calls'] / slow['wall']:.0f} calls/s")
    print(f"  ideal (calls x latency / concurrency) {ideal:.2f}s; ratio ideal/actual = {ideal / slow['wall']:.2f}")
    print(f"  anchor phase {t['anchor_s']:.2f}s (ideal {ideal_anchor:.2f}s, ratio {ideal_anchor / t['anchor_s']:.2f}); "
          f"filter phase {t['filter_s']:.2f}s (ideal {ideal_filter:.2f}s, ratio {ideal_filter / t['filter_s']:.2f})")
    print(f"  ingest {t['ingest_s']:.2f}s, build-sft {t['build_sft_s']:.2f}s")
    print(f"  overhead beyond the ideal: {(slow['wall'] - ideal) / n * 1000:.1f} ms per pair")
    f = fast["timing"]
    print("\n[zero latency: the pipeline's own cost]")
    print(f"  wall {fast['wall']:.2f}s -> {n / fast['wall']:.1f} pairs/s; {fast['wall'] / n * 1000:.1f} ms per pair "
          f"({fast['wall'] / fast['calls'] * 1000:.2f} ms per teacher call, client + local server)")
    print(f"  per pair: ingest {f['ingest_s'] / n * 1000:.1f} ms, anchor {f['anchor_s'] / n * 1000:.1f} ms, "
          f"filter {f['filter_s'] / n * 1000:.1f} ms, build-sft {f['build_sft_s'] / n * 1000:.1f} ms")
    g = local["timing"]
    print("\n[in-process scripted teacher: the pipeline's own overhead beyond the teacher calls]")
    print(f"  wall {local['wall']:.2f}s -> {local['wall'] / n * 1000:.1f} ms per pair, "
          f"{local['wall'] / local['calls'] * 1000:.2f} ms per teacher call")
    print(f"  per pair: ingest {g['ingest_s'] / n * 1000:.1f} ms, anchor {g['anchor_s'] / n * 1000:.1f} ms, "
          f"filter {g['filter_s'] / n * 1000:.1f} ms, build-sft {g['build_sft_s'] / n * 1000:.1f} ms")
    print(f"  share of the zero-latency HTTP run spent in the pipeline itself: {local['wall'] / fast['wall']:.2f}")


if __name__ == "__main__":
    main()
