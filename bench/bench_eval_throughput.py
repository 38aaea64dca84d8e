"""Does `rationalrewards eval` keep the backend saturated, and what does a report cost?

1. Throughput: a Parquet benchmark with embedded PNGs is judged by the stand-alone scripted
   server (its own process) answering after ``--latency-s``. With C items in flight the ideal is
   C / latency items/s (one request per item; ``--swap`` sends two per item through the same
   C request slots, so its ideal is half). Printed: achieved items/s and the ratio to ideal.
2. Memory: peak RSS after streaming the whole file vs the size of the images in it (rows are
   read a batch at a time, so the peak should not grow with the file).
3. Report cost: all protocols + bootstrap intervals (1,000 resamples) for 5,000 synthetic pairs.

    .venv/bin/python bench/bench_eval_throughput.py [--rows 600] [--latency-s 0.1]
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image


def noise_png(seed: int, size: int) -> bytes:
    rng = random.Random(seed)
    img = Image.effect_noise((size, size), 20 + rng.random() * 20).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def write_data(path: Path, rows: int, size: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pool = [noise_png(i, size) for i in range(16)]
    table = pa.Table.from_pylist([
        {"id": f"r{i}", "prompt": f"prompt {i}", "image_a": {"bytes": pool[i % 16], "path": None},
         "image_b": {"bytes": pool[(i + 7) % 16], "path": None}, "label": "A" if i % 3 else "B"}
        for i in range(rows)
    ])
    pq.write_table(table, path, row_group_size=64)
    return sum(len(pool[i % 16]) + len(pool[(i + 7) % 16]) for i in range(rows))


def run_once(base_url: str, data: Path, out: Path, concurrency: int, limit: int, swap: bool) -> tuple[float, int]:
    from rationalrewards import RewardModel
    from rationalrewards.eval import Evaluation

    rm = RewardModel.from_options(base_url=[base_url], model="scripted-judge", concurrency=concurrency)
    ev = Evaluation("pairs", data, out, limit=limit, swap=swap)
    try:
        stats = rm._run(ev.arun(rm, concurrency=concurrency))
    finally:
        rm.close()
    if stats.ok != stats.judged:
        raise SystemExit(f"unexpected failures: {stats.failed}")
    return stats.wall_s, stats.judged


def run_baseline(base_url: str, data: Path, concurrency: int, limit: int) -> float:
    """The core client alone (``acompare_batch`` over pairs already in memory): the ceiling
    the evaluation's own work (streaming, result rows, fsync) is measured against."""
    import pyarrow.parquet as pq

    from rationalrewards import RewardModel

    rows = pq.read_table(data).slice(0, limit).to_pylist()
    items = [{"id": r["id"], "prompt": r["prompt"], "image_a": r["image_a"], "image_b": r["image_b"]} for r in rows]
    rm = RewardModel.from_options(base_url=[base_url], model="scripted-judge", concurrency=concurrency)
    try:
        t0 = time.perf_counter()
        rm.compare_batch(items, concurrency=concurrency)
        return len(items) / (time.perf_counter() - t0)
    finally:
        rm.close()


def bench_report(n: int) -> float:
    from rationalrewards.eval.protocols import (
        Record,
        group_tie_calibrated_acc,
        no_ties_acc,
        summarize,
        three_way_acc,
        tie_calibrated_acc,
    )

    rng = random.Random(0)
    records = []
    for i in range(n):
        label = rng.choice(["A", "B", "tie"])
        margin = round(rng.gauss(0.8 if label == "A" else -0.8 if label == "B" else 0.0, 1.5), 1)
        pred = "tie" if margin == 0 else "A" if margin > 0 else "B"
        records.append(Record(id=str(i), label=label, group=f"g{i // 3}", judged=True, ok=rng.random() > 0.02,
                              prediction=pred, margin=margin))
    t0 = time.perf_counter()
    for proto in (three_way_acc(records, 0.0), no_ties_acc(records), tie_calibrated_acc(records, "m"),
                  group_tie_calibrated_acc(records, "m")):
        summarize(proto, n_boot=1000, seed=0)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--image-px", type=int, default=192)
    ap.add_argument("--latency-s", type=float, default=0.1)
    args = ap.parse_args()

    proc = subprocess.Popen([sys.executable, "-m", "rationalrewards.testing.scripted_server", "--latency-s",
                             str(args.latency_s), "--no-record"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"server did not start: {line!r}")
    base_url = line.split(" ", 1)[1]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "bench.parquet"
            image_bytes = write_data(data, args.rows, args.image_px)
            print(f"data: {args.rows} pairs, {image_bytes / 1e6:.1f} MB of PNG bytes, file "
                  f"{data.stat().st_size / 1e6:.1f} MB; server latency {args.latency_s} s")
            rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            # First, before anything else loads the table: the streamed full pass.
            wall, judged = run_once(base_url, data, Path(tmp) / "run-all", 64, args.rows, False)
            rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"full pass: {judged} pairs in {wall:.1f} s; peak RSS {rss1:.0f} MB (before judging {rss0:.0f} MB) "
                  f"vs {image_bytes / 1e6:.1f} MB of images in the file")
            print(f"{'concurrency':>11} {'swap':>5} {'items':>6} {'wall s':>7} {'items/s':>8} {'ideal':>7} "
                  f"{'/ideal':>6} {'client-only items/s':>20} {'eval/client':>11}")
            for c, swap in ((1, False), (8, False), (32, False), (64, False), (32, True)):
                limit = min(args.rows, max(20, c * 8))
                wall, judged = run_once(base_url, data, Path(tmp) / f"run-{c}-{swap}", c, limit, swap)
                ideal = c / args.latency_s / (2 if swap else 1)
                rate = judged / wall
                base = "" if swap else f"{run_baseline(base_url, data, c, limit):.1f}"
                ratio = "" if swap else f"{rate / float(base):.2f}"
                print(f"{c:>11} {swap!s:>5} {judged:>6} {wall:>7.2f} {rate:>8.1f} {ideal:>7.1f} {rate / ideal:>6.2f} "
                      f"{base:>20} {ratio:>11}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for n in (1000, 5000):
        print(f"report protocols + 1000-resample bootstrap for {n} pairs: {bench_report(n):.2f} s")


if __name__ == "__main__":
    main()
