"""Parser throughput on the golden corpus.

Loads every ``tests/golden/*.txt`` (with its ``.json`` for task and mode; a file without one is
parsed as a t2i pointwise critique), parses the whole corpus repeatedly for about ``--seconds``
and prints critiques/s, microseconds per critique and the ok rate (the corpus deliberately holds
failing outputs, so the ok rate is below 1). The last line is one JSON object.

    python bench/bench_parser.py [--seconds 3] [--golden tests/golden]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from rationalrewards.critique.parser import parse_comparison, parse_critique

ROOT = Path(__file__).resolve().parent.parent


def load_corpus(folder: Path) -> list[tuple[str, str, str, str]]:
    """(name, task, mode, raw) for every golden output."""
    corpus = []
    for txt in sorted(folder.glob("*.txt")):
        meta_path = txt.with_suffix(".json")
        meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        raw = txt.read_bytes().decode("utf-8")
        corpus.append((txt.stem, meta.get("task", "t2i"), meta.get("mode", "pointwise"), raw))
    return corpus


def parse_one(task: str, mode: str, raw: str) -> bool:
    if mode == "pairwise":
        return parse_comparison(raw, task).ok
    return parse_critique(raw, task).ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="approximate measuring time")
    ap.add_argument("--golden", type=Path, default=ROOT / "tests" / "golden", help="folder of .txt outputs")
    args = ap.parse_args(argv)

    corpus = load_corpus(args.golden)
    if not corpus:
        print(f"no .txt files under {args.golden}", file=sys.stderr)
        return 2

    # One untimed pass: warms regex caches and gives the ok rate of the corpus.
    ok = sum(parse_one(task, mode, raw) for _, task, mode, raw in corpus)
    ok_rate = ok / len(corpus)

    n = 0
    passes = 0
    start = time.perf_counter()
    deadline = start + args.seconds
    while True:
        for _, task, mode, raw in corpus:
            parse_one(task, mode, raw)
        n += len(corpus)
        passes += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start

    per_s = n / elapsed
    us = elapsed / n * 1e6
    mean_chars = sum(len(raw) for *_, raw in corpus) / len(corpus)
    print(f"corpus      : {len(corpus)} outputs from {args.golden} (mean {mean_chars:.0f} chars)")
    print(f"parsed      : {n} critiques in {elapsed:.2f} s ({passes} passes)")
    print(f"throughput  : {per_s:,.0f} critiques/s")
    print(f"latency     : {us:.1f} µs/critique")
    print(f"ok rate     : {ok}/{len(corpus)} = {ok_rate:.3f}")
    print(
        json.dumps(
            {
                "bench": "parser",
                "cases": len(corpus),
                "parsed": n,
                "seconds": round(elapsed, 3),
                "critiques_per_s": round(per_s, 1),
                "us_per_critique": round(us, 2),
                "ok": ok,
                "ok_rate": round(ok_rate, 4),
                "python": platform.python_version(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
